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


class _SumOverProcesses(torch.autograd.Function):
    """Sum of a tensor over the processes of a group; the gradient of each input is the sum of
    the output's gradients over the processes (every process's loss depends on every input)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def shard_dropout(drop: Dropout, x: Tensor, shard: BatchShard | None) -> Tensor:
    """``drop(x)`` where x [rows, ...] are the shard's rows: the mask is drawn for all ``total`` rows."""
    if shard is None:
        return drop(x)
    if x.shape[0] != shard.stop - shard.start:
        raise ValueError(f"x has {x.shape[0]} rows, the shard {shard.stop - shard.start}")
    return drop.rows_of_batch(x, shard.start, shard.total)


def shard_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, shard: BatchShard | None) -> Tensor:
    """``bn`` in training mode over the whole batch, from this shard's rows x [rows, C, *]:
    per-channel sums are all-reduced (gradients flow back through the reduction), and the
    running statistics move exactly as one process's would."""
    if shard is None or not bn.training or not dist.is_initialized():
        return bn(x)
    dims = [0, *range(2, x.ndim)]
    shape = [1, x.shape[1], *([1] * (x.ndim - 2))]
    count = shard.total * x[0, 0].numel()  # elements per channel in the whole batch
    # One reduction of [sum, sum of squares] per layer (each collective costs the host more than
    # its bytes); in float64, so E[x^2] - E[x]^2 loses nothing to cancellation.
    # Statistics in float32 at least, as batch norm keeps them under bf16 autocast.
    xf = x.float()
    moments = torch.stack([xf.sum(dims), xf.square().sum(dims)]).double()  # [2, C]
    moments = _SumOverProcesses.apply(moments, shard.group) / count
    mean, var = moments[0].float(), (moments[1] - moments[0].square()).clamp_min(0).float()  # [C], [C] biased
    y = (xf - mean.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    y = y.to(x.dtype)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), factor)
            unbiased = var.detach() * (count / max(count - 1, 1))
            bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), factor)
    return y
