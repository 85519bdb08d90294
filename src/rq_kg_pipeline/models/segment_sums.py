"""Row sums of weighted products of gathered rows, ``out[r] = sum_{e in r} w_e * a[ia_e] * b[ib_e]``,
as two fused Triton kernels: the [E, d] products are never written to memory.

CompGCN's mult aggregation and both of its gradients are such sums over the graph's edges, each
with the edges grouped by a different output row (target, source or relation). The edges of
each row are cut into chunks of at most ``CHUNK_EDGES``, so a hub entity or a frequent relation
is spread over many programs; a second kernel adds each row's chunks in order (no atomics:
the result is the same on every run).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rq_kg_pipeline.models import triton_support

CHUNK_EDGES = 64  # edges summed by one program: bounds the work of a hub row's programs
KERNELS_MODULE = "rq_kg_pipeline.models.triton_segment_kernels"


@dataclass(frozen=True)
class SegmentPlan:
    """The edges of one sum, ordered by output row and cut into chunks that never cross a row.

    A row with one chunk (most rows) is written by that chunk's program straight into the output;
    the chunks of a longer row write float32 partial sums, and a second kernel adds them, in chunk
    order, into the row ("fix-up" rows, which also include the rows without edges: 0).
    """

    a_index: Tensor  # [E] int32 row of ``a`` gathered by each edge, edges in output-row order
    b_index: Tensor  # [E] int32 row of ``b``
    weight: Tensor  # [E] float32
    chunk_start: Tensor  # [C + 1] int32 first edge of each chunk, then E
    chunk_slot: Tensor  # [C] int32 output row a chunk writes, or -1 - its partial sum's index
    fixup_rows: Tensor  # [F] int32 output rows that have no edges or several chunks
    fixup_partials: Tensor  # [F + 1] int32 first partial sum of each fix-up row, then their count
    num_rows: int
    num_partials: int

    @classmethod
    def build(cls, rows: Tensor, a_index: Tensor, b_index: Tensor, weight: Tensor, num_rows: int, chunk: int = CHUNK_EDGES) -> SegmentPlan:
        """Plan for edges with output rows ``rows`` [E] in [0, num_rows); the order within a row is kept."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        order = torch.sort(rows, stable=True).indices  # [E]
        counts = torch.bincount(rows, minlength=num_rows)  # [rows]
        chunks_per_row = (counts + chunk - 1) // chunk  # [rows], 0 for a row without edges
        row_chunks = torch.cat([counts.new_zeros(1), chunks_per_row.cumsum(0)])  # [rows + 1]
        row_first_edge = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # [rows + 1]
        chunk_row = torch.repeat_interleave(torch.arange(num_rows), chunks_per_row)  # [C]
        within_row = torch.arange(chunk_row.numel()) - row_chunks[chunk_row]  # [C]
        chunk_start = torch.cat([row_first_edge[chunk_row] + within_row * chunk, counts.sum().view(1)])  # [C + 1]
        fixup = chunks_per_row != 1  # [rows]
        partials = torch.where(fixup, chunks_per_row, 0)  # [rows] partial sums of each row
        first_partial = torch.cat([counts.new_zeros(1), partials.cumsum(0)])  # [rows + 1]
        chunk_slot = torch.where(fixup[chunk_row], -1 - (first_partial[chunk_row] + within_row), chunk_row)  # [C]
        fixup_rows = fixup.nonzero().flatten()  # [F]
        return cls(
            a_index=a_index[order].int(),
            b_index=b_index[order].int(),
            weight=weight[order].float(),
            chunk_start=chunk_start.int(),
            chunk_slot=chunk_slot.int(),
            fixup_rows=fixup_rows.int(),
            fixup_partials=torch.cat([first_partial[fixup_rows], first_partial[-1:]]).int(),
            num_rows=num_rows,
            num_partials=int(first_partial[-1]),
        )

    def to(self, device: torch.device) -> SegmentPlan:
        tensors = ("a_index", "b_index", "weight", "chunk_start", "chunk_slot", "fixup_rows", "fixup_partials")
        moved = {name: getattr(self, name).to(device) for name in tensors}
        return SegmentPlan(num_rows=self.num_rows, num_partials=self.num_partials, **moved)


def segment_sums(plan: SegmentPlan, a: Tensor, b: Tensor, out_dtype: torch.dtype = torch.float32) -> Tensor:
    """a [Na, d], b [Nb, d] (same device, any float dtypes) -> [plan.num_rows, d] of ``out_dtype``,
    accumulated in float32 (bf16 inputs halve the bytes gathered; the products are float32).

    Runs Triton's kernels (on CPU only under ``TRITON_INTERPRET=1``, which the tests use)."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b need the same width, got {a.shape[1]} and {b.shape[1]}")
    return triton_support.kernels(KERNELS_MODULE).segment_sums(plan, a.contiguous(), b.contiguous(), out_dtype)
