"""Dropout whose CPU mask costs a fraction of ``torch.bernoulli_``'s.

On the CPU, ``nn.Dropout`` draws one Bernoulli variate per element, and on the FB15k-237
recipe that was a quarter of a training step (ConvE's feature maps alone are [1024, 200, 14, 14]).
Here each 32-bit random word gives two 16-bit uniforms, compared with a threshold: the same
Bernoulli mask up to p rounded to a multiple of 1/65536. CUDA keeps PyTorch's fused kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # 16-bit uniforms: p is rounded to a multiple of 1 / 65536


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """Bool mask of ``shape``, each element True with probability 1 - p (p rounded to 1/65536)."""
    numel = shape.numel()
    words = torch.empty((numel + 1) // 2, dtype=torch.int32, device=device).random_(-(2**31), 2**31)
    halves = words.view(torch.int16)[:numel].view(shape)  # uniform over [-32768, 32768)
    return halves >= round(p * _LEVELS) - _LEVELS // 2


class Dropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` (same arguments, no parameters) with the cheap mask on CPU."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training, self.inplace)
        return self.rows_of_batch(x, 0, x.shape[0])

    def rows_of_batch(self, x: Tensor, start: int, total: int) -> Tensor:
        """Dropout of x [rows, ...], rows [start, start + rows) of a batch of ``total``: the mask is
        drawn for the whole batch (on every device, so data-parallel processes draw alike) and sliced."""
        if not self.training or self.p == 0.0:
            return x
        p = round(self.p * _LEVELS) / _LEVELS
        keep = keep_mask(torch.Size((total, *x.shape[1:])), p, x.device)[start : start + x.shape[0]]
        return x.masked_fill(~keep, 0.0) * (1.0 / (1.0 - p))
