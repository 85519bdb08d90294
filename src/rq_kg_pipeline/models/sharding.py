"""Layers that look across the batch, computed from one data-parallel process's share of it.

In data-parallel training each process holds rows [start, stop) of a global batch. Batch norm
and dropout would otherwise see only those rows: batch norm's statistics are all-reduced
(differentiably) over the processes, and dropout masks are drawn for the whole batch and
sliced, so N processes compute what one process computes on the whole batch (same random
numbers, same statistics, same running averages) and every process's random stream stays
in step with the others'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rq_kg_pipeline.models.dropout import Dropout


@dataclass(frozen=True)
class BatchShard:
    """Rows [start, stop) of a global batch of ``total`` rows, held by this process of ``group``
    (None: the default process group)."""

    start: int
    stop: int
    total: int
    group: Any = None

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop <= self.total:
            raise ValueError(f"a batch shard needs 0 <= start < stop <= total, got {self.start}, {self.stop}, {self.total}")


class _GatherFromProcesses(torch.autograd.Function):
    """x [*] of every process of a group, stacked [world, *] on each; the gradient of a process's
    x sums its slice's gradients over the processes (every process's loss depends on every x)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group, ctx.rank = group, dist.get_rank(group)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank], None


def shard_dropout(drop: Dropout, x: Tensor, shard: BatchShard | None) -> Tensor:
    """``drop(x)`` where x [rows, ...] are the shard's rows: the mask is drawn for all ``total`` rows."""
    if shard is None:
        return drop(x)
    if x.shape[0] != shard.stop - shard.start:
        raise ValueError(f"x has {x.shape[0]} rows, the shard {shard.stop - shard.start}")
    return drop.rows_of_batch(x, shard.start, shard.total)


def shard_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, shard: BatchShard | None) -> Tensor:
    """``bn`` in training mode over the whole batch, from this shard's rows x [rows, C, *]: each
    process's per-channel count, mean and centred sum of squares are gathered (gradients flow
    back through the gathering) and combined exactly (Chan et al.), and the running statistics
    move as one process's would. Centring before squaring matters: a channel whose mean is far
    from zero (a conv bias ahead of batch norm drifts freely) loses its variance in E[x^2] - E[x]^2."""
    if shard is None or not bn.training or not dist.is_initialized():
        return bn(x)
    dims = [0, *range(2, x.ndim)]
    shape = [1, x.shape[1], *([1] * (x.ndim - 2))]
    xf = x.float()  # statistics in float32 at least, as batch norm keeps them under bf16 autocast
    local_count = torch.full((x.shape[1],), float(x[:, 0].numel()), device=x.device)  # [C]
    local_mean = xf.mean(dims)  # [C]
    local_m2 = (xf - local_mean.view(shape)).square().sum(dims)  # [C]
    gathered = _GatherFromProcesses.apply(torch.stack([local_count, local_mean, local_m2]), shard.group)  # [W, 3, C]
    counts, means, m2s = gathered.unbind(1)  # [W, C] each
    count = counts.sum(0)  # [C]: elements per channel in the whole batch
    mean = (counts * means).sum(0) / count  # [C]
    var = (m2s + counts * (means - mean).square()).sum(0) / count  # [C] biased
    y = (xf - mean.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    y = y.to(x.dtype)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), factor)
            unbiased = var.detach() * count / (count - 1).clamp_min(1)
            bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), factor)
    return y
