"""Under DistributedDataParallel the engine's parameter gradients reach DDP's hooks.

A single-process gloo group (world size 1) is enough to check the mechanism: DDP only
reduces gradients that arrive through the autograd graph's AccumulateGrad nodes. A comm hook
counts the buckets DDP reduces, and the gradients must equal those without DDP.
"""

import copy

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_gradients_equal_plain_ones(process_group, make_sequence):
    seq = make_sequence(3, dtype=torch.float32, dropout=0.2).train()
    x = torch.randn(2, 8, 6, 6, 6)

    def grads(model):
        torch.manual_seed(5)
        model(x).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    reference = grads(copy.deepcopy(seq))
    naive = copy.deepcopy(seq)
    naive.memory_saving = False
    reference_naive = grads(naive)

    ddp = DistributedDataParallel(copy.deepcopy(seq))
    buckets = []

    def counting_hook(state, bucket):
        buckets.append(bucket.index())
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    ddp.register_comm_hook(None, counting_hook)
    got = grads(ddp)
    assert buckets, "DDP reduced no gradient bucket"
    for a, b, c in zip(got, reference, reference_naive):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)
