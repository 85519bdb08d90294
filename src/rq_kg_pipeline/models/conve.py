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


def aligned(size: int, multiple: int = 8) -> int:
    """``size`` rounded up to a multiple of ``multiple`` (8: 16-byte rows in bf16, what cuBLAS's fast kernels need)."""
    return -(-size // multiple) * multiple


def aligned_scores(query: Tensor, candidates: Tensor) -> Tensor:
    """query [B, D] @ candidates [M, D].t() -> [B, M], a view of a product over M rounded up to a
    multiple of 8 (zero candidates, sliced off). cuBLAS's fast bf16 kernels need 16-byte aligned
    rows: FB15k-237's [B, 14541] logits took 3.3x longer forward and backward than [B, 14544] on an H200."""
    count = candidates.shape[0]
    return (query @ F.pad(candidates, (0, 0, 0, aligned(count) - count)).t())[:, :count]


def patch_columns(images: Tensor, ks: int) -> Tensor:
    """The ks x ks patches of images [B, H, W] as rows [B*(H-ks+1)*(W-ks+1), ks*ks], channels-last
    order: a one-input-channel convolution is then one GEMM with its weight [F, ks*ks]."""
    return images.unfold(1, ks, 1).unfold(2, ks, 1).reshape(-1, ks * ks)  # from a [B, H_out, W_out, ks, ks] view


# Images per chunk in the sweeps of _ConvFeaturesLinear: 8 x 196 positions x 200 filters is
# ~1.2 MB, so each chunk's several element-wise passes run in cache rather than in memory.
_CHUNK_IMAGES = 8


def _features_of_chunk(
    xhat: Tensor, bn_weight: Tensor, bn_bias: Tensor, keep: Tensor | None, out: Tensor, relu: bool = True
) -> Tensor:
    """relu(bn_weight * xhat + bn_bias) zeroed where not ``keep`` into ``out`` (rows [n, C] of whole
    images, keep [images, H, W, C] contiguous or None): the one definition used to build the features
    and to rebuild them. The mask multiplies as 0/1 (uint8 view), 4x faster than ``masked_fill_``'s
    branchy kernel and the same bits: the relu outputs are finite and >= +0 (never -0: bn_bias starts
    at +0 and Adam cannot make it -0), so x * 0 = +0 and x * 1 = x. Without ``relu`` the result is
    only good for its sign: > 0 exactly where the features are (what relu's backward needs)."""
    piece = torch.addcmul(bn_bias, xhat, bn_weight, out=out)
    if relu:
        piece.clamp_min_(0.0)
    if keep is not None:
        piece.mul_(keep.view(piece.shape).view(torch.uint8))
    return piece


class _ConvFeaturesLinear(torch.autograd.Function):
    """Channels-last conv as one GEMM, relu(batch norm over all positions) zeroed where not ``keep``, then
    the linear map of each image's features: ConvE's conv -> bn1 -> relu -> dropout -> fc in one op.

    cols [N, K] patches (N = B*H*W), weight [C, K], bias [C], bn weight/bias [C], keep [B, H, W, C]
    (contiguous, or None), fc_weight [D, C*H*W] (the module's, channels-first order), fc_bias [D] ->
    out [B, D], batch mean [C], biased batch variance [C]. The dropout scale and the channels-last
    order are folded into one copy of the FC weight ([D, H*W*C]). The feature maps are normalised in
    place in cache-sized chunks (a pass over memory each for the mean, the centred variance and the
    output), statistics and gradient sums are pairwise sums of centred values (PyTorch's
    channels-last batch norm kernel on CPU sums 200k rows in float32, ~100x further from exact than
    its NCHW kernel). Kept for backward: the patches, the normalised maps and the keep mask. The
    features (the FC's input, [N, C] like the maps) are rebuilt from them in backward by the same
    chunked ops (same bits) into one buffer that then takes their gradient in place, so backward
    holds two [N, C] tensors where autograd around the FC held four."""

    @staticmethod
    def forward(
        ctx: Any,
        cols: Tensor,
        weight: Tensor,
        bias: Tensor,
        bn_weight: Tensor,
        bn_bias: Tensor,
        keep: Tensor | None,
        fc_weight: Tensor,
        fc_bias: Tensor,
        scale: float,
        eps: float,
        images: int,
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
        features = torch.empty_like(y)  # [N, C]
        for i, a in enumerate(range(0, n, step)):
            part = y[a : a + step].mul_(invstd)  # normalised in place: y holds x_hat from here
            _features_of_chunk(part, bn_weight, bn_bias, _keep_chunk(keep, i), features[a : a + step])
        positions = n // images
        channels_last = torch.empty(fc_weight.shape[0], positions, channels, dtype=fc_weight.dtype)  # [D, H*W, C]
        channels_last.copy_(fc_weight.view(-1, channels, positions).transpose(1, 2)).mul_(scale)
        folded = channels_last.view(fc_weight.shape[0], -1)  # [D, H*W*C]: dropout scale and layout folded in
        out = F.linear(features.view(images, -1), folded, fc_bias)  # [B, D]
        ctx.save_for_backward(cols, weight, y, bn_weight, bn_bias, invstd, keep, folded)
        ctx.step, ctx.images, ctx.scale = step, images, scale
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _mean: Tensor, _var: Tensor) -> tuple[Tensor | None, ...]:
        cols, weight, xhat, bn_weight, bn_bias, invstd, keep, folded = ctx.saved_tensors
        n, channels = xhat.shape
        step = ctx.step
        g = torch.empty_like(xhat)  # [N, C]: the features, then their gradient, then the conv output's
        for i, a in enumerate(range(0, n, step)):
            _features_of_chunk(xhat[a : a + step], bn_weight, bn_bias, _keep_chunk(keep, i), g[a : a + step])
        features = g.view(ctx.images, -1)  # [B, H*W*C]
        grad_fc_weight = grad_fc_bias = None
        if ctx.needs_input_grad[6]:  # autograd's linear computes grad^T @ input; unfold the layout and scale
            grad_folded = grad.t().mm(features).view(folded.shape[0], -1, channels)  # [D, H*W, C]
            grad_fc_weight = torch.empty_like(grad_folded.transpose(1, 2), memory_format=torch.contiguous_format)  # [D, C, H*W]
            grad_fc_weight.copy_(grad_folded.transpose(1, 2)).mul_(ctx.scale)
            grad_fc_weight = grad_fc_weight.view(folded.shape[0], -1)  # [D, C*H*W]
        if ctx.needs_input_grad[7]:
            grad_fc_bias = grad.sum(0)  # [D]
        torch.mm(grad, folded, out=features)  # gradient at the features, over them
        scratch = torch.empty(step, channels, dtype=xhat.dtype)  # one chunk's features up to relu (only signs matter)
        grad_bn_bias = torch.zeros(channels, dtype=torch.float64)  # [C]
        grad_bn_weight = torch.zeros(channels, dtype=torch.float64)  # [C]
        for i, a in enumerate(range(0, n, step)):
            rows = slice(a, a + step)
            signs = _features_of_chunk(xhat[rows], bn_weight, bn_bias, _keep_chunk(keep, i), scratch[: xhat[rows].shape[0]], relu=False)
            part = torch.ops.aten.threshold_backward.grad_input(g[rows], signs, 0.0, grad_input=g[rows])  # zero where features <= 0
            grad_bn_bias += part.sum(0, dtype=torch.float64)
            grad_bn_weight += (part * xhat[rows]).sum(0, dtype=torch.float64)
        k = bn_weight * invstd  # [C]
        shift = (k * grad_bn_bias / n).to(g.dtype)  # [C]
        slope = (k * grad_bn_weight / n).to(g.dtype)  # [C]
        for a in range(0, n, step):
            g[a : a + step].mul_(k).sub_(shift).addcmul_(xhat[a : a + step], slope, value=-1.0)
        grad_cols = g @ weight if ctx.needs_input_grad[0] else None  # [N, K]
        return (
            grad_cols, g.t() @ cols, g.sum(0), grad_bn_weight.to(g.dtype), grad_bn_bias.to(g.dtype),
            None, grad_fc_weight, grad_fc_bias, None, None, None,
        )  # fmt: skip


def _keep_chunk(keep: Tensor | None, chunk: int) -> Tensor | None:
    """The keep mask [images, H, W, C] of the ``chunk``-th run of _CHUNK_IMAGES images (None: no dropout)."""
    return None if keep is None else keep[chunk * _CHUNK_IMAGES : (chunk + 1) * _CHUNK_IMAGES]


def _conv_features_linear(
    conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm, fc: nn.Linear, cols: Tensor, keep: Tensor | None, scale: float, images: int
) -> Tensor:
    """``fc(relu(bn(conv(images))) * keep * scale)`` in training mode, from the patches cols [B*H*W, ks*ks]
    of B ``images``, keep [B, H, W, F] contiguous or None -> [B, D]; ``bn``'s running statistics move
    as ``bn``'s own."""
    out, mean, var = _ConvFeaturesLinear.apply(
        cols, conv.weight.view(conv.out_channels, -1), conv.bias, bn.weight, bn.bias, keep, fc.weight, fc.bias, scale, bn.eps, images
    )
    n = cols.shape[0]
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        bn.running_mean.lerp_(mean, factor)
        bn.running_var.lerp_(var * (n / max(n - 1, 1)), factor)
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
        if self.training and (x.device.type == "cuda" or (x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"))):
            x = self._training_features(x, shard)  # [B, D]
        else:
            x = F.relu(shard_batch_norm(self.bn1, self.conv(x), shard))  # [B, F, 2k_h-ks+1, k_w-ks+1]
            x = shard_dropout(self.feature_drop, x, shard)
            x = self.fc(x.flatten(1))  # [B, D]
        x = shard_dropout(self.hidden_drop, x, shard)
        return F.relu(shard_batch_norm(self.bn2, x, shard))

    def _training_features(self, x: Tensor, shard: BatchShard | None) -> Tensor:
        """conv -> bn1 -> relu -> feature dropout -> fc of the input image x [B, 1, 2k_h, k_w] -> [B, D],
        the same function as the general path (on CPU with the same random numbers), laid out for a
        training step.

        The convolution is one GEMM over 7x7 patches with channels last ([B*H*W, F]: oneDNN's
        direct kernel for one input channel took 2.2x longer on CPU, forward and backward, and
        cuDNN's made ConvE 2x slower on an H100, 3.4 against 1.7 ms); on CPU batch norm,
        relu, the dropout mask and the FC run with it as one op (:class:`_ConvFeaturesLinear`, which
        keeps one [B*H*W, F] tensor for backward), and the 1 / (1 - p) dropout scale and the
        channels-last order are folded into the FC weight ([D, F*H*W] -> [D, H*W*F]) instead of
        being passes over the [B, F, H, W] feature maps. On CUDA, and across data-parallel processes
        (batch norm needs gathered statistics), the same steps run as separate ops."""
        ks = self.conv.kernel_size[0]
        rows, filters = x.shape[0], self.conv.out_channels
        height, width = 2 * self.k_h - ks + 1, self.k_w - ks + 1
        cols = patch_columns(x.view(rows, 2 * self.k_h, self.k_w), ks)  # [B*H*W, ks*ks]
        start, total = (0, rows) if shard is None else (shard.start, shard.total)
        size = torch.Size((rows, filters, height, width))
        if x.device.type == "cpu" and (shard is None or not dist.is_initialized()):
            keep = self.feature_drop.rows_keep_mask_permuted(size, start, total, x.device, (0, 2, 3, 1))  # [B, H, W, F] or None
            scale = self.feature_drop.scale if keep is not None else 1.0
            return _conv_features_linear(self.conv, self.bn1, self.fc, cols, keep, scale, rows)  # [B, D]
        # CUDA, or whole-batch statistics across processes: the general batch norm on the channels-last view
        drop = self.feature_drop.rows_drop_mask(size, start, total, x.device)  # [B, F, H, W] or None
        drop = None if drop is None else drop.permute(0, 2, 3, 1)  # [B, H, W, F] view
        scale = self.feature_drop.scale if drop is not None else 1.0
        weight = (self.fc.weight * scale).view(self.dim, filters, height, width).permute(0, 2, 3, 1).reshape(self.dim, -1)  # [D, H*W*F]
        conv_weight = self.conv.weight.view(filters, ks * ks)  # [F, ks*ks]
        if x.device.type == "cuda":
            # H200, bf16: zero taps up to a multiple of 8 (over 49, cuBLAS took 1.8x longer forward and
            # backward), and the bias added apart (addmm's took 2.2x a plain product; compiled, the
            # addition fuses into batch norm's kernels)
            pad = aligned(ks * ks) - ks * ks
            y = F.pad(cols, (0, pad)) @ F.pad(conv_weight, (0, pad)).t() + self.conv.bias  # [B*H*W, F]
        else:
            y = torch.addmm(self.conv.bias, cols, conv_weight.t())  # [B*H*W, F]
        y = shard_batch_norm(self.bn1, y.view(rows, height, width, filters).permute(0, 3, 1, 2), shard)  # [B, F, H, W]
        y = relu_drop(y.permute(0, 2, 3, 1), drop)  # [B, H, W, F]
        return F.linear(y.reshape(rows, height * width * filters), weight, self.fc.bias)

    def forward(self, ent: Tensor, rel: Tensor, candidates: Tensor, shard: BatchShard | None = None) -> Tensor:
        """Logits [B, M] of queries (ent [B, D], rel [B, D]) against candidates [M, D]."""
        if candidates.ndim != 2 or candidates.shape[1] != self.dim:
            raise ValueError(f"candidates must be [M, {self.dim}], got {tuple(candidates.shape)}")
        query = self.query(ent, rel, shard)  # [B, D]
        return aligned_scores(query, candidates) if candidates.device.type == "cuda" else query @ candidates.t()
