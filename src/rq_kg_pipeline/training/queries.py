"""1-N training queries: every (entity, relation) pair of the training triples, both directions,
with all its tails, batched in a seeded shuffled order with label-smoothed dense targets.

1-N scoring (ConvE/CompGCN) scores a query against all M entities at once; the label row is
(1 - eps) * y + eps / M, with y the 0/1 indicator of the query's known training answers.
Batches are assembled on the CPU (index arithmetic with data-dependent sizes) and shipped to
the training device in one non-blocking copy, so a CUDA step never waits for the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex


@dataclass(frozen=True)
class QueryBatch:
    """One batch of 1-N queries, its distinct heads, and its smoothed label matrix."""

    heads: torch.Tensor  # [B] int64 query entity
    rels: torch.Tensor  # [B] int64 relation in [0, 2R)
    labels: torch.Tensor  # [B, M] float32 smoothed targets
    unique_heads: torch.Tensor  # [U] int64 sorted distinct heads
    head_index: torch.Tensor  # [B] int64 position of heads[i] in unique_heads


@dataclass(frozen=True)
class TrainQueries:
    """Unique training queries with their answer sets (CSR, shared with the filter index)."""

    index: FilterIndex  # built over the training triples only

    @classmethod
    def build(cls, train_ids: torch.Tensor, num_entities: int, num_relations: int) -> TrainQueries:
        """From training id triples [N, 3]: queries (h, r) -> tails and (t, r + R) -> heads."""
        return cls(FilterIndex.build([train_ids], num_entities, num_relations))

    def __len__(self) -> int:
        return self.index.num_queries

    @property
    def num_entities(self) -> int:
        return self.index.num_entities

    def to(self, device: torch.device | str) -> TrainQueries:
        return TrainQueries(self.index.to(device))

    def labels(self, query_ids: torch.Tensor, label_smoothing: float, device: torch.device | str | None = None) -> torch.Tensor:
        """[B, M] float32 label rows of the queries at positions ``query_ids`` [B], on ``device``."""
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        m = self.num_entities
        rows, targets = self.index.targets_of(query_ids)  # [T], [T]
        device = torch.device(device) if device is not None else self.index.device
        labels = torch.full((query_ids.numel(), m), label_smoothing / m, device=device)
        labels[_to(rows, device), _to(targets, device)] = (1.0 - label_smoothing) + label_smoothing / m
        return labels

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator,
        label_smoothing: float,
        shuffle: bool = True,
        device: torch.device | str | None = None,
    ) -> Iterator[QueryBatch]:
        """One epoch of batches on ``device`` (default: the index's) in an order drawn from
        ``generator`` (a CPU generator, so the same seed gives the same order on every device).
        The last batch may be smaller; a last batch of one query joins the one before it
        (batch norm cannot train on one row)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = torch.device(device) if device is not None else self.index.device
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)  # [n]
        order = order.to(self.index.device)
        entities, relations = self.index.query_entities(), self.index.query_relations()  # [n]
        bounds = [*range(0, n, batch_size)][: self.num_batches(batch_size)] + [n]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            ids = order[start:stop]  # [B]
            heads = entities[ids]
            unique_heads, head_index = torch.unique(heads, return_inverse=True)  # [U], [B]
            yield QueryBatch(
                _to(heads, device),
                _to(relations[ids], device),
                self.labels(ids, label_smoothing, device),
                _to(unique_heads, device),
                _to(head_index, device),
            )

    def num_batches(self, batch_size: int) -> int:
        n = len(self)
        full, rest = divmod(n, batch_size)
        return full + (rest > 1 or (rest == 1 and full == 0))


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> CUDA copies go through pinned memory without blocking the host; others are plain."""
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
