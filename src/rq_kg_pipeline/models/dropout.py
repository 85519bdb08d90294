"""Dropout whose CPU mask costs a fraction of ``torch.bernoulli_``'s.

On the CPU, ``nn.Dropout`` draws one Bernoulli variate per element, and on the FB15k-237
recipe that was a quarter of a training step (ConvE's feature maps alone are [1024, 200, 14, 14]).
Here each 32-bit random word gives two 16-bit uniforms, compared with a threshold: the same
Bernoulli mask up to p rounded to a multiple of 1/65536. CUDA keeps PyTorch's fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # 16-bit uniforms: p is rounded to a multiple of 1 / 65536


def _uniform_halves(shape: torch.Size, device: torch.device) -> Tensor:
    """int16 tensor of ``shape``, uniform over [-32768, 32768): two per 32-bit random word."""
    numel = shape.numel()
    words = torch.empty((numel + 1) // 2, dtype=torch.int32, device=device).random_(-(2**31), 2**31)
    return words.view(torch.int16)[:numel].view(shape)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """Bool mask of ``shape``, each element True with probability 1 - p (p rounded to 1/65536)."""
    return _uniform_halves(shape, device) >= round(p * _LEVELS) - _LEVELS // 2


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """Bool mask of ``shape``, each element True with probability p (p rounded to 1/65536). On CPU
    ``~keep_mask(shape, p, device)`` from the same random numbers, without the negation pass; on CUDA
    one Bernoulli draw (random words and a comparison took 2.4x longer on an H200)."""
    if device.type == "cuda":
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(round(p * _LEVELS) / _LEVELS)
    return _uniform_halves(shape, device) < round(p * _LEVELS) - _LEVELS // 2


def keep_mask_permuted(shape: torch.Size, p: float, device: torch.device, dims: tuple[int, ...]) -> Tensor:
    """``keep_mask(shape, p, device).permute(dims)`` laid out contiguously, from the same random numbers
    (one strided pass over them instead of a mask pass and a copy)."""
    halves = _uniform_halves(shape, device).permute(dims)
    keep = torch.empty(halves.shape, dtype=torch.bool, device=device)
    return torch.ge(halves, round(p * _LEVELS) - _LEVELS // 2, out=keep)


class _DropScale(torch.autograd.Function):
    """x zeroed where ``drop``, times ``scale``, into one new tensor; saves only the mask (the
    autograd version of ``x.masked_fill(drop, 0) * scale`` allocates twice forward and backward)."""

    @staticmethod
    def forward(ctx, x: Tensor, drop: Tensor, scale: float) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return x.masked_fill(drop, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: ANN001
        (drop,) = ctx.saved_tensors
        return grad.mul(ctx.scale).masked_fill_(drop, 0.0), None, None


class _ReluDropScale(torch.autograd.Function):
    """relu(z) zeroed where ``drop``, times ``scale`` (1: no pass); saves only its output (positive
    exactly where the gradient passes: relu's output and the mask are not kept, no intermediate is made)."""

    @staticmethod
    def forward(ctx, z: Tensor, drop: Tensor, scale: float) -> Tensor:  # noqa: ANN001
        out = z.clamp_min(0.0).masked_fill_(drop, 0.0)
        if scale != 1.0:
            out.mul_(scale)
        ctx.save_for_backward(out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: ANN001
        (out,) = ctx.saved_tensors
        if ctx.scale == 1.0:
            return torch.ops.aten.threshold_backward(grad, out, 0.0), None, None
        scaled = grad.mul(ctx.scale)
        return torch.ops.aten.threshold_backward.grad_input(scaled, out, 0.0, grad_input=scaled), None, None


def relu_drop(z: Tensor, drop: Tensor | None) -> Tensor:
    """relu(z) zeroed where ``drop`` (same shape; None: no dropout), without the 1 / (1 - p) scale
    (the caller folds it into the next linear map): one tensor saved instead of three."""
    return torch.relu(z) if drop is None else _ReluDropScale.apply(z, drop, 1.0)


class Dropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` (same arguments, no parameters) with the cheap mask on CPU."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training, self.inplace)
        return self.rows_of_batch(x, 0, x.shape[0])

    def relu(self, x: Tensor) -> Tensor:
        """``self(relu(x))``, on CPU in training as one op that keeps only its output for backward
        (same mask, same values and gradients as the two modules in a row)."""
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return self(F.relu(x))
        return _ReluDropScale.apply(x, drop_mask(x.shape, self.rounded_p, x.device), self.scale)

    def rows_of_batch(self, x: Tensor, start: int, total: int) -> Tensor:
        """Dropout of x [rows, ...], rows [start, start + rows) of a batch of ``total``: the mask is
        drawn for the whole batch (on every device, so data-parallel processes draw alike) and sliced."""
        if not self.training or self.p == 0.0:
            return x
        drop = drop_mask(torch.Size((total, *x.shape[1:])), self.rounded_p, x.device)[start : start + x.shape[0]]
        return _DropScale.apply(x, drop, self.scale)

    @property
    def rounded_p(self) -> float:
        """The drop probability the CPU mask realises: p rounded to a multiple of 1 / 65536."""
        return round(self.p * _LEVELS) / _LEVELS

    @property
    def scale(self) -> float:
        """1 / (1 - rounded p): the factor on kept elements in training."""
        return 1.0 / (1.0 - self.rounded_p)

    def rows_keep_mask_permuted(self, shape: torch.Size, start: int, total: int, device: torch.device, dims: tuple[int, ...]) -> Tensor | None:
        """Keep mask (True: kept) of rows [start, start + shape[0]) of a batch of ``total``, drawn as
        :meth:`rows_of_batch` draws it (same random numbers), permuted by ``dims`` (which must keep
        the rows first) and contiguous; None when not training or p == 0."""
        if not self.training or self.p == 0.0:
            return None
        if dims[0] != 0:
            raise ValueError(f"dims must keep the batch rows first, got {dims}")
        keep = keep_mask_permuted(torch.Size((total, *shape[1:])), self.rounded_p, device, dims)
        return keep if shape[0] == total else keep[start : start + shape[0]]

    def rows_drop_mask(self, shape: torch.Size, start: int, total: int, device: torch.device) -> Tensor | None:
        """Drop mask (True: zeroed) of rows [start, start + shape[0]) of a batch of ``total``, drawn as
        :meth:`rows_of_batch` draws it (same random numbers); None when not training or p == 0."""
        if not self.training or self.p == 0.0:
            return None
        return drop_mask(torch.Size((total, *shape[1:])), self.rounded_p, device)[start : start + shape[0]]
