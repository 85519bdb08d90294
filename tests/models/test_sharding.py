"""Batch norm and dropout of a data-parallel shard: what one process computes on the whole batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from rq_kg_pipeline.models.dropout import Dropout
from rq_kg_pipeline.models.sharding import BatchShard, shard_batch_norm, shard_dropout


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo group of one process: the all-reduce path runs, and its sums are the local ones."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize(
    ("dtype", "scale", "offset"),
    [(torch.float32, 3.0, 2.0), (torch.bfloat16, 3.0, 2.0), (torch.float32, 0.1, 30.0)],  # last: E[x^2] - E[x]^2 loses ~1 %
)
def test_sharded_batch_norm_matches_batch_norm(one_process_group, dtype, scale, offset):
    torch.manual_seed(0)
    x = (torch.randn(64, 8, 5, 5) * scale + offset).to(dtype).requires_grad_()
    reference, sharded = nn.BatchNorm2d(8), nn.BatchNorm2d(8)
    with torch.no_grad():
        for bn in (reference, sharded):
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
        sharded.load_state_dict(reference.state_dict())
    expected = reference(x.detach().float().requires_grad_())
    got = shard_batch_norm(sharded, x, BatchShard(0, 64, 64))
    assert got.dtype == dtype
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-2, atol=2e-2)  # bf16 output rounding
    torch.testing.assert_close(got.float(), expected, **tol)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(sharded, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
    got.float().square().sum().backward()
    assert sharded.weight.grad is not None and x.grad is not None and torch.isfinite(x.grad).all()


def test_shard_dropout_draws_the_whole_batch_mask_and_keeps_its_rows():
    drop = Dropout(0.5)
    x = torch.ones(10, 6)
    torch.manual_seed(3)
    whole = drop(x)
    torch.manual_seed(3)
    rows = shard_dropout(drop, x[4:7], BatchShard(4, 7, 10))
    assert torch.equal(rows, whole[4:7])
    assert torch.get_rng_state().equal(_state_after(drop, x))  # the same random numbers consumed


def _state_after(drop: Dropout, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(3)
    drop(x)
    return torch.get_rng_state()
