"""Transformer encoder layers over a short latent sequence, written out so every mode runs the same kernels.

``nn.TransformerEncoderLayer`` switches to a fused "fast path" in eval mode without autograd
(``torch._transformer_encoder_layer_fwd``), whose floating-point results differ slightly from
the path taken with autograd on. Codes are an argmin over distances, so a last-bit difference
between training and extraction can flip a code. These layers compute the same post-norm
block as ``nn.TransformerEncoderLayer(batch_first=True, norm_first=False)`` with plain
matmul/softmax attention, identical whatever the grad mode (dropout aside, which eval turns off).
"""

from __future__ import annotations

from torch import Tensor, nn

from rq_kg_pipeline.models.dropout import Dropout


class EncoderLayer(nn.Module):
    """Post-norm self-attention + feed-forward block on [B, L, D] (batch first)."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"att_head must be >= 1 and divide the model dim {dim}, got {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff1 = nn.Linear(dim, ff_dim)
        self.ff2 = nn.Linear(ff_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn_drop = Dropout(dropout)
        self.drop1 = Dropout(dropout)
        self.drop_ff = Dropout(dropout)
        self.drop2 = Dropout(dropout)

    def _attention(self, x: Tensor) -> Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [B, H, L, hd] each
        weights = self.attn_drop(((q @ k.transpose(-2, -1)) * self.head_dim**-0.5).softmax(dim=-1))  # [B, H, L, L]
        return self.out((weights @ v).transpose(1, 2).reshape(b, length, dim))  # [B, L, D]

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.drop1(self._attention(x)))
        return self.norm2(x + self.drop2(self.ff2(self.drop_ff.relu(self.ff1(x)))))  # drop_ff(relu(.)) fused


class SequenceEncoder(nn.Module):
    """``num_layers`` :class:`EncoderLayer` in a row (0 layers: identity)."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, dropout: float, ff_mult: int = 4) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"tf_layers must be >= 0, got {num_layers}")
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads, ff_mult * dim, dropout) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
