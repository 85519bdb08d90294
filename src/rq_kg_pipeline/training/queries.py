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
    """One batch of 1-N queries, its distinct heads, and its smoothed label matrix.

    In data-parallel training a process holds rows [start, start + B) of a batch of ``total``
    queries (its shard) and the distinct heads of the whole batch; otherwise start 0, total B.
    A batch for a fixed-shape (CUDA-graph) step has its distinct heads padded to a fixed length
    P with entity 0, and ``valid_heads`` marks the real ones.
    """

    heads: torch.Tensor  # [B] int64 query entity
    rels: torch.Tensor  # [B] int64 relation in [0, 2R)
    labels: torch.Tensor  # [B, M] float32 smoothed targets
    unique_heads: torch.Tensor  # [U] int64 sorted distinct heads (of the whole batch)
    head_index: torch.Tensor  # [B] int64 position of heads[i] in unique_heads
    start: int = 0
    total: int = 0  # queries in the whole batch (0: B, no sharding)
    valid_heads: torch.Tensor | None = None  # [P] bool, True for the U real entries of unique_heads
    num_unique: int = 0  # U, the real distinct heads (known on the host)


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
        rank: int = 0,
        world_size: int = 1,
        pad_heads: int = 0,
    ) -> Iterator[QueryBatch]:
        """One epoch of batches on ``device`` (default: the index's) in an order drawn from
        ``generator`` (a CPU generator, so the same seed gives the same order on every device).
        The last batch may be smaller; a last batch of fewer than max(2, world_size) queries joins
        the one before it (batch norm cannot train on one row, and every process needs one).

        With ``world_size`` > 1, process ``rank`` gets its shard of every batch: the batches of
        one process, cut into world_size contiguous slices without overlap (slice ``rank``), with
        the distinct heads of the whole batch. All processes must pass equal generators.

        With ``pad_heads`` P > 0, every batch's distinct heads are padded to P (at least the
        number of distinct heads a batch can have) and ``valid_heads`` marks the real ones."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if world_size > min(batch_size, len(self)):
            raise ValueError(
                f"{world_size} processes need batches of at least {world_size} queries "
                f"(batch_size {batch_size}, {len(self)} training queries)"
            )
        device = torch.device(device) if device is not None else self.index.device
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)  # [n]
        order = order.to(self.index.device)
        entities, relations = self.index.query_entities(), self.index.query_relations()  # [n]
        bounds = [*range(0, n, batch_size)][: self.num_batches(batch_size, world_size)] + [n]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            total = stop - start
            lo, hi = rank * total // world_size, (rank + 1) * total // world_size  # this process's rows
            batch_heads = entities[order[start:stop]]  # [total]
            unique_heads, head_index = torch.unique(batch_heads, return_inverse=True)  # [U], [total]
            num_unique = unique_heads.numel()
            valid = None
            if pad_heads:
                if num_unique > pad_heads:
                    raise ValueError(f"pad_heads={pad_heads} is less than a batch's {num_unique} distinct heads")
                valid = torch.arange(pad_heads) < num_unique  # [P]
                unique_heads = torch.cat([unique_heads, unique_heads.new_zeros(pad_heads - num_unique)])  # [P]
            ids = order[start + lo : start + hi]  # [B]
            yield QueryBatch(
                _to(batch_heads[lo:hi], device),
                _to(relations[ids], device),
                self.labels(ids, label_smoothing, device),
                _to(unique_heads, device),
                _to(head_index[lo:hi], device),
                start=lo,
                total=total,
                valid_heads=None if valid is None else _to(valid, device),
                num_unique=num_unique,
            )

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        n = len(self)
        full, rest = divmod(n, batch_size)
        return full + (rest >= max(2, world_size) or (rest > 0 and full == 0))


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> CUDA copies go through pinned memory without blocking the host; others are plain."""
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
