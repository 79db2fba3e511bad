"""`revmed plan` and revmed.planning.solve: the largest patch, batch and depth that fit, from
the planner's own fit of a narrow demo-sr (see conftest.py)."""

from __future__ import annotations

import json

import pytest

from revmed import config
from revmed.errors import InputError
from revmed.planning import PeakModel, count_parameters, fit_edges, make_plan, solve
from revmed.sizes import parse_memory


@pytest.mark.parametrize(("text", "expected"), [
    ("24GiB", 24 * 2**30), ("24G", 24 * 2**30), ("24 gib", 24 * 2**30), ("500MiB", 500 * 2**20),
    ("1.5TiB", int(1.5 * 2**40)), ("32GB", 32 * 10**9), ("4096", 4096), ("64K", 65536),
    ("100B", 100),
])
def test_memory_sizes_parse(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "24XB", "", "GiB", "1.2.3G", "24iB"])
def test_bad_memory_sizes_are_input_errors(text):
    with pytest.raises(InputError, match="^memory ") as error:
        parse_memory(text)
    assert error.value.option == "memory"  # the command line shows it as --memory


def test_cli_bad_memory_is_one_line_before_measuring(cli):
    result = cli("plan", "--preset", "demo-sr", "--memory", "lots")
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "--memory lots" in lines[0]


@pytest.fixture
def no_measuring(monkeypatch, fitted):
    """``revmed plan`` with the session's fit instead of new measurements."""
    monkeypatch.setattr(solve, "measure_fit", lambda *args, **kwargs: fitted)


def _sets(tiny_sets):
    return [a for s in tiny_sets for a in ("--set", s)]


def test_cli_json_reports_the_largest_values_that_fit(cli, tiny, tiny_sets, tiny_setup, fitted,
                                                      no_measuring):
    """Each largest value fits and the next larger one does not (the session's measured fit).

    The budget is the smaller of 80 MiB and the fit's peak at depth 40, so that the depth search
    ends below its cap (``MAX_DEPTH``) however lean the fit measured on this machine is (on a
    lean one, more than ``MAX_DEPTH`` couplings fitted in 80 MiB and the test failed)."""
    model, setup = fitted[0], tiny_setup
    deep = count_parameters(setup.with_depth(40))
    memory = min(80 * 2**20, int(model.peak(setup, setup.patch, tiny.train.batch_size, deep)))
    result = cli("plan", "-p", "demo-sr", *_sets(tiny_sets),
                 "--memory", str(memory), "--device", "cpu", "--json")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["memory"] == memory and plan["depth_key"] == "model.depth"
    assert [m["patch"][0] for m in plan["measurements"]] == list(fit_edges(setup))
    model = PeakModel(plan["model"]["fixed"], plan["model"]["per_voxel"])
    params = count_parameters(setup)
    batch, patch = tiny.train.batch_size, tiny.patch.size

    edge, step = plan["largest_patch"]["edge"], plan["largest_patch"]["edge_step"]
    assert edge % step == 0 and edge >= setup.smallest_edge
    assert model.peak(setup, [edge] * 3, batch, params) <= memory \
        < model.peak(setup, [edge + step] * 3, batch, params)

    most = plan["largest_batch"]["batch"]
    assert most >= 1
    assert model.peak(setup, patch, most, params) <= memory < model.peak(setup, patch, most + 1,
                                                                         params)
    depth = plan["largest_depth"]
    assert not depth["capped"] and depth["depth"] > tiny.model.depth
    assert count_parameters(setup.with_depth(depth["depth"])) \
        == depth["parameters"]  # parameters are linear in the depth
    deeper = depth["parameters"] + (count_parameters(setup.with_depth(3))
                                    - count_parameters(setup.with_depth(2)))
    assert model.peak(setup, patch, batch, depth["parameters"]) <= memory \
        < model.peak(setup, patch, batch, deeper)
    assert depth["peak"] <= memory < depth["next_peak"]
    assert plan["preset_peak"]["fits"] and plan["preset_peak"]["peak"] <= memory


def test_memory_too_small_for_the_smallest_patch_is_one_error_line(cli, tiny_sets,
                                                                   no_measuring):
    result = cli("plan", "-p", "demo-sr", *_sets(tiny_sets),
                 "--memory", "2MiB", "--device", "cpu")
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "too small" in lines[0] and "24^3" in lines[0]
    assert "Traceback" not in result.err


def test_cli_table_names_each_plan_and_the_one_step_caveat(cli, tiny_sets, no_measuring):
    result = cli("plan", "-p", "demo-sr", *_sets(tiny_sets),
                 "--memory", "24GiB", "--device", "cpu")
    assert result.code == 0, result.err
    for row in ("preset as it is", "largest patch", "largest batch", "largest depth",
                "more than 1000", "one training step"):
        assert row in result.out


def test_depth_is_not_predicted_without_memory_saving(tiny_sets, setup_of, fitted):
    model, fits = fitted
    plain = config.load_preset("demo-sr", [*tiny_sets, "model.memory_saving=false"])
    plan = make_plan(setup_of(plain), 2**30, model, fits, "cpu")
    assert plan.largest_depth is None and any("memory_saving" in n for n in plan.notes)
