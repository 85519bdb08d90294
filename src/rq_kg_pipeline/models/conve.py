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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rq_kg_pipeline.models.dropout import Dropout
from rq_kg_pipeline.models.sharding import BatchShard, shard_batch_norm, shard_dropout


def default_conve_shape(dim: int) -> tuple[int, int]:
    """Most square factorisation (k_h, k_w), k_h <= k_w, k_h * k_w == dim (e.g. 200 -> (10, 20))."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    k_h = max(d for d in range(1, math.isqrt(dim) + 1) if dim % d == 0)
    return k_h, dim // k_h


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
        x = F.relu(shard_batch_norm(self.bn1, self.conv(x), shard))  # [B, F, 2k_h-ks+1, k_w-ks+1]
        x = shard_dropout(self.feature_drop, x, shard)
        x = shard_dropout(self.hidden_drop, self.fc(x.flatten(1)), shard)  # [B, D]
        return F.relu(shard_batch_norm(self.bn2, x, shard))

    def forward(self, ent: Tensor, rel: Tensor, candidates: Tensor, shard: BatchShard | None = None) -> Tensor:
        """Logits [B, M] of queries (ent [B, D], rel [B, D]) against candidates [M, D]."""
        if candidates.ndim != 2 or candidates.shape[1] != self.dim:
            raise ValueError(f"candidates must be [M, {self.dim}], got {tuple(candidates.shape)}")
        return self.query(ent, rel, shard) @ candidates.t()
