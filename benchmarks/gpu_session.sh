#!/usr/bin/env bash
# The GPU figures docs/benchmarks.md waits for, in one run on a lent GPU machine (the device
# tool: one H200, 15 minutes of device time per session, 10 minutes per command).
#
# What it measures, most wanted first, each under its own time limit:
#   1. whole-volume inference of a 512x512x300 CT (chestct-da, and chestct-sr from 256x256x75),
#      blended windows and tiles, bf16 and fp32, through Translator.translate
#                                                               (benchmarks/whole_volume.py)
#   2. the chest-CT abstract's Table 1 at 128^3: step memory against depth 0-8 for memory-free
#      backprop, plain autograd and checkpointing              (benchmarks/memory.py)
#   3. step time of each engine relative to plain autograd at depth 8, 128^3, with the
#      reconstruction error in fp32, bf16 and fp16             (benchmarks/speed.py)
#   4. --compile and --channels-last on chestct-sr's training step at 128^3, bf16
#                                                               (benchmarks/fast_paths.py)
#
# The machine's image has PyTorch but not monai, nibabel, SimpleITK or pydicom: they travel as
# wheels (about 58 MiB, under the 64 MiB the working tree may take).
#
# Here, once, with the project's virtualenv active (downloads the wheels of the versions it
# holds into .whl/, which git ignores through .git/info/exclude):
#     bash benchmarks/gpu_session.sh --fetch-wheels
# There, through the device tool: command "bash benchmarks/gpu_session.sh", carry [".whl"],
# timeout_s 600. $OUT/log.txt holds every table; $OUT/*.json the raw results.
# A dry run of the plumbing on this CPU, with small sizes:
#     SMOKE=1 OUT=/tmp/gpu-smoke PYTHON=.venv/bin/python bash benchmarks/gpu_session.sh
set -u
cd "$(dirname "$0")/.." || exit 2

if [ "${1:-}" = "--fetch-wheels" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    pins=()
    for name in monai nibabel SimpleITK pydicom; do
        pins+=("$name==$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')")
    done
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
    exit $?
fi

PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1
if [ -z "${SMOKE:-}" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    # revmed itself as pip would lay it out (cli/ and presets/ become revmed.cli and
    # revmed.presets), copied rather than built: no build tools needed there
    rm -rf /tmp/site/revmed && cp -r revmed /tmp/site/revmed && cp -r cli /tmp/site/revmed/cli \
        && cp -r presets /tmp/site/revmed/presets || exit 1
    export PYTHONPATH=/tmp/site
    DEVICE=cuda
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$LOG" 2>&1
else
    DEVICE=cpu
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    >> "$LOG" 2>&1

# run NAME SECONDS COMMAND...: one benchmark under a time limit, its table into the log
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" --device "$DEVICE" --json "$OUT/$name.json" > "$OUT/$name.out" 2>&1
    echo "exit $?" >> "$OUT/$name.out"
    grep -v -i -E "warn|^\s+warnings\.|^\s*$" "$OUT/$name.out" | tail -40 | tee -a "$LOG"
    rm -f "$OUT/$name.out"
}

if [ -z "${SMOKE:-}" ]; then
    run whole_volume_da 100 "$PYTHON" benchmarks/whole_volume.py --preset chestct-da \
        --ways windows,tiles --precisions bf16,fp32
    run whole_volume_sr 100 "$PYTHON" benchmarks/whole_volume.py --preset chestct-sr \
        --ways windows,tiles --precisions bf16,fp32
    run memory_128 170 "$PYTHON" benchmarks/memory.py --patch 128 --depths 0 1 2 4 8 \
        --modes revmed naive checkpoint
    run speed_128 80 "$PYTHON" benchmarks/speed.py --patch 128 --depth 8 --rounds 7 \
        --modes revmed naive checkpoint
    run fast_paths_128 110 "$PYTHON" benchmarks/fast_paths.py --patch 128 --batch 1 \
        --presets chestct-sr --precisions bf16 --rounds 3
else
    run whole_volume_da 120 "$PYTHON" benchmarks/whole_volume.py --preset chestct-da \
        --shape 96,96,64 --quick
    run memory_128 120 "$PYTHON" benchmarks/memory.py --patch 16 --depths 0 1 --width 8 \
        --modes revmed naive
    run speed_128 120 "$PYTHON" benchmarks/speed.py --patch 16 --depth 2 --width 8 --rounds 2 \
        --modes revmed naive
fi
echo "== done $(date +%H:%M:%S)" | tee -a "$LOG"
