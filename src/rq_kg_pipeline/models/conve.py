"""ConvE 1-N scorer (Dettmers et al., AAAI 2018): logits of (entity, relation) queries against all candidates.

The query entity and relation vectors [D] are each reshaped to a [k_h, k_w] image and stacked
to [2*k_h, k_w]; bn -> dropout -> conv -> bn -> relu -> dropout -> fc (-> D) -> dropout -> bn
-> relu gives a query vector that is dotted with every candidate [M, D].

Unlike the original ConvE there is no learned bias per candidate entity: such a table would
tell the scorer who an entity is without going through its codes, and codes-only scoring
must see entities only through the vectors decoded from their codes.
"""

from __future__ import annotations

import math

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rq_kg_pipeline.models.dropout import Dropout, relu_drop
from rq_kg_pipeline.models.sharding import BatchShard, shard_batch_norm, shard_dropout


def default_conve_shape(dim: int) -> tuple[int, int]:
    """Most square factorisation (k_h, k_w), k_h <= k_w, k_h * k_w == dim (e.g. 200 -> (10, 20))."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    k_h = max(d for d in range(1, math.isqrt(dim) + 1) if dim % d == 0)
    return k_h, dim // k_h


# Images per chunk in the sweeps of _ConvBatchNormReluDrop: 8 x 196 positions x 200 filters is
# ~1.2 MB, so each chunk's several element-wise passes run in cache rather than in memory.
_CHUNK_IMAGES = 8


class _ConvBatchNormReluDrop(torch.autograd.Function):
    """Channels-last conv as one GEMM, then relu(batch norm over all positions) zeroed where ``drop``.

    cols [N, K] patches (N = B*H*W), weight [C, K], bias [C], bn weight/bias [C], drop [B, H, W, C]
    (or None) -> out [N, C], batch mean [C], biased batch variance [C]. The feature maps are
    normalised in place in cache-sized chunks (a pass over memory each for the mean, the centred
    variance and the output), statistics and gradient sums are pairwise sums of centred values
    (PyTorch's channels-last batch norm kernel on CPU sums 200k rows in float32, ~100x further from
    exact than its NCHW kernel), and only the normalised maps and the output are kept for backward."""

    @staticmethod
    def forward(
        ctx: Any, cols: Tensor, weight: Tensor, bias: Tensor, bn_weight: Tensor, bn_bias: Tensor, drop: Tensor | None, eps: float, images: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        y = torch.addmm(bias, cols, weight.t())  # [N, C]
        n, channels = y.shape
        step = n // images * _CHUNK_IMAGES  # rows of whole images per chunk
        mean = y.sum(0) / n  # [C]
        square_sum = torch.zeros(channels, dtype=torch.float64)  # [C]
        for a in range(0, n, step):
            part = y[a : a + step].sub_(mean)  # centred in place
            square_sum += (part * part).sum(0, dtype=torch.float64)
        var = (square_sum / n).to(y.dtype)  # [C] biased
        invstd = torch.rsqrt(var + eps)  # [C]
        out = torch.empty_like(y)  # [N, C]
        for i, a in enumerate(range(0, n, step)):
            part = y[a : a + step].mul_(invstd)  # normalised in place: y holds x_hat from here
            piece = torch.addcmul(bn_bias, part, bn_weight, out=out[a : a + step]).clamp_min_(0.0)
            if drop is not None:
                piece.view(-1, *drop.shape[1:]).masked_fill_(drop[i * _CHUNK_IMAGES : (i + 1) * _CHUNK_IMAGES], 0.0)
        ctx.save_for_backward(cols, weight, y, out, bn_weight, invstd)
        ctx.step = step
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _mean: Tensor, _var: Tensor) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor, None, None, None]:
        cols, weight, xhat, out, bn_weight, invstd = ctx.saved_tensors
        n, channels = xhat.shape
        step = ctx.step
        g = torch.empty_like(xhat)  # [N, C]: gradient at the batch norm's output, then at the conv's
        grad_bn_bias = torch.zeros(channels, dtype=torch.float64)  # [C]
        grad_bn_weight = torch.zeros(channels, dtype=torch.float64)  # [C]
        for a in range(0, n, step):
            part = torch.ops.aten.threshold_backward.grad_input(grad[a : a + step], out[a : a + step], 0.0, grad_input=g[a : a + step])
            grad_bn_bias += part.sum(0, dtype=torch.float64)
            grad_bn_weight += (part * xhat[a : a + step]).sum(0, dtype=torch.float64)
        k = bn_weight * invstd  # [C]
        shift = (k * grad_bn_bias / n).to(g.dtype)  # [C]
        slope = (k * grad_bn_weight / n).to(g.dtype)  # [C]
        for a in range(0, n, step):
            g[a : a + step].mul_(k).sub_(shift).addcmul_(xhat[a : a + step], slope, value=-1.0)
        grad_cols = g @ weight if ctx.needs_input_grad[0] else None  # [N, K]
        return grad_cols, g.t() @ cols, g.sum(0), grad_bn_weight.to(g.dtype), grad_bn_bias.to(g.dtype), None, None, None


def _conv_batch_norm_relu_drop(
    conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm, cols: Tensor, drop: Tensor | None, images: int
) -> Tensor:
    """``relu(bn(conv(images)))`` zeroed where ``drop`` ([B, H, W, F] or None), training mode, from the
    patches cols [B*H*W, ks*ks] of B ``images`` -> [B*H*W, F]; ``bn``'s running statistics move as ``bn``'s own."""
    out, mean, var = _ConvBatchNormReluDrop.apply(cols, conv.weight.view(conv.out_channels, -1), conv.bias, bn.weight, bn.bias, drop, bn.eps, images)
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        bn.running_mean.lerp_(mean, factor)
        bn.running_var.lerp_(var * (out.shape[0] / max(out.shape[0] - 1, 1)), factor)
    return out


class ConvEScorer(nn.Module):
    """ConvE scoring head: (entity, relation) image -> query vector, dotted with candidates."""

    def __init__(
        self,
        dim: int,
        k_h: int,
        k_w: int,
        num_filters: int = 32,
        kernel_size: int = 7,
        input_drop: float = 0.2,
        feature_drop: float = 0.3,
        hidden_drop: float = 0.3,
    ) -> None:
        super().__init__()
        if k_h < 1 or k_w < 1 or k_h * k_w != dim:
            raise ValueError(f"k_h * k_w must equal dim: k_h={k_h}, k_w={k_w}, dim={dim} (see default_conve_shape)")
        if num_filters < 1:
            raise ValueError(f"num_filters must be >= 1, got {num_filters}")
        if not 1 <= kernel_size <= min(2 * k_h, k_w):
            raise ValueError(
                f"kernel_size must be in [1, min(2*k_h, k_w)] = [1, {min(2 * k_h, k_w)}] for k_h={k_h}, k_w={k_w}, got {kernel_size}"
            )
        for name, value in (("input_drop", input_drop), ("feature_drop", feature_drop), ("hidden_drop", hidden_drop)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.dim, self.k_h, self.k_w = dim, k_h, k_w
        self.bn0 = nn.BatchNorm2d(1)
        self.input_drop = Dropout(input_drop)
        self.conv = nn.Conv2d(1, num_filters, kernel_size)
        self.bn1 = nn.BatchNorm2d(num_filters)
        self.feature_drop = Dropout(feature_drop)
        flat = num_filters * (2 * k_h - kernel_size + 1) * (k_w - kernel_size + 1)
        self.fc = nn.Linear(flat, dim)
        self.hidden_drop = Dropout(hidden_drop)
        self.bn2 = nn.BatchNorm1d(dim)

    def query(self, ent: Tensor, rel: Tensor, shard: BatchShard | None = None) -> Tensor:
        """ent [B, D], rel [B, D] -> query vector [B, D] (before the dot with candidates).

        With ``shard``, the B rows are this process's part of a data-parallel batch: batch norm
        and dropout act as on the whole batch (see :mod:`rq_kg_pipeline.models.sharding`)."""
        if ent.shape != rel.shape or ent.ndim != 2 or ent.shape[1] != self.dim:
            raise ValueError(f"ent and rel must both be [B, {self.dim}], got {tuple(ent.shape)} and {tuple(rel.shape)}")
        image = torch.cat([ent.reshape(-1, 1, self.k_h, self.k_w), rel.reshape(-1, 1, self.k_h, self.k_w)], dim=2)  # [B, 1, 2k_h, k_w]
        x = shard_dropout(self.input_drop, shard_batch_norm(self.bn0, image, shard), shard)
        if self.training and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            x = self._cpu_training_features(x, shard)  # [B, D]
        else:
            x = F.relu(shard_batch_norm(self.bn1, self.conv(x), shard))  # [B, F, 2k_h-ks+1, k_w-ks+1]
            x = shard_dropout(self.feature_drop, x, shard)
            x = self.fc(x.flatten(1))  # [B, D]
        x = shard_dropout(self.hidden_drop, x, shard)
        return F.relu(shard_batch_norm(self.bn2, x, shard))

    def _cpu_training_features(self, x: Tensor, shard: BatchShard | None) -> Tensor:
        """conv -> bn1 -> relu -> feature dropout -> fc of the input image x [B, 1, 2k_h, k_w] -> [B, D],
        the same function (and random numbers) as the general path, laid out for a CPU step.

        The convolution is one GEMM over 7x7 patches with channels last ([B*H*W, F]: oneDNN's
        direct kernel for one input channel took 2.2x longer, forward and backward), batch norm runs on
        the channels-last view, relu and the dropout mask are one op that saves only its output,
        and the 1 / (1 - p) dropout scale and the channels-last order are folded into the FC weight
        ([D, F*H*W] -> [D, H*W*F]) instead of being passes over the [B, F, H, W] feature maps."""
        ks = self.conv.kernel_size[0]
        rows, filters = x.shape[0], self.conv.out_channels
        height, width = 2 * self.k_h - ks + 1, self.k_w - ks + 1
        patches = x.view(rows, 2 * self.k_h, self.k_w).unfold(1, ks, 1).unfold(2, ks, 1)  # [B, H, W, ks, ks] view
        cols = patches.reshape(rows * height * width, ks * ks)  # [B*H*W, ks*ks]
        start, total = (0, rows) if shard is None else (shard.start, shard.total)
        drop = self.feature_drop.rows_drop_mask(torch.Size((rows, filters, height, width)), start, total, x.device)  # [B, F, H, W] or None
        drop = None if drop is None else drop.permute(0, 2, 3, 1)  # [B, H, W, F] view
        if shard is None or not dist.is_initialized():
            y = _conv_batch_norm_relu_drop(self.conv, self.bn1, cols, drop, rows)  # [B*H*W, F]
        else:  # whole-batch statistics across processes: the general batch norm on the channels-last view
            y = torch.addmm(self.conv.bias, cols, self.conv.weight.view(filters, ks * ks).t())  # [B*H*W, F]
            y = shard_batch_norm(self.bn1, y.view(rows, height, width, filters).permute(0, 3, 1, 2), shard)  # [B, F, H, W]
            y = relu_drop(y.permute(0, 2, 3, 1), drop)  # [B, H, W, F]
        y = y.reshape(rows, height * width * filters)  # [B, H*W*F], a view
        scale = self.feature_drop.scale if drop is not None else 1.0
        weight = (self.fc.weight * scale).view(self.dim, filters, height, width).permute(0, 2, 3, 1).reshape(self.dim, -1)  # [D, H*W*F]
        return F.linear(y, weight, self.fc.bias)

    def forward(self, ent: Tensor, rel: Tensor, candidates: Tensor, shard: BatchShard | None = None) -> Tensor:
        """Logits [B, M] of queries (ent [B, D], rel [B, D]) against candidates [M, D]."""
        if candidates.ndim != 2 or candidates.shape[1] != self.dim:
            raise ValueError(f"candidates must be [M, {self.dim}], got {tuple(candidates.shape)}")
        return self.query(ent, rel, shard) @ candidates.t()
