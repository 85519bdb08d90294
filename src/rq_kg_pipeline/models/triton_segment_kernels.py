"""Triton kernels of :func:`rq_kg_pipeline.models.segment_sums.segment_sums` (imported only when used).

Whether they run compiled or in Triton's CPU interpreter is fixed when this module is imported
(``TRITON_INTERPRET``), as Triton decides it when a kernel is defined.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from rq_kg_pipeline.models.segment_sums import SegmentPlan

# Edges loaded together by one program (a [BLOCK_EDGES, BLOCK_D] tile of each input) and warps per
# program. The width d is a compile-time constant: row offsets are then known multiples of d, so
# gathers of aligned rows are vector loads (d = 200 is no multiple of 16, which Triton assumes otherwise).
BLOCK_EDGES = 4
NUM_WARPS = 1


@triton.jit
def _chunk_sums(a_ptr, a_index_ptr, b_ptr, b_index_ptr, weight_ptr, chunk_start_ptr, chunk_slot_ptr, out_ptr, partial_ptr,
                d: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr):
    """Sum over the edges e of chunk c of weight[e] * a[a_index[e]] * b[b_index[e]], written to
    out[slot] (the chunk is its row's only one) or to partial[-1 - slot] (float32)."""
    chunk = tl.program_id(0)
    start = tl.load(chunk_start_ptr + chunk)
    end = tl.load(chunk_start_ptr + chunk + 1)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < d
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for first in range(start, end, BLOCK_E):
        edges = first + tl.arange(0, BLOCK_E)
        edge_ok = edges < end
        ia = tl.load(a_index_ptr + edges, mask=edge_ok, other=0).to(tl.int64)
        ib = tl.load(b_index_ptr + edges, mask=edge_ok, other=0).to(tl.int64)
        w = tl.load(weight_ptr + edges, mask=edge_ok, other=0.0)
        ok = edge_ok[:, None] & col_ok[None, :]
        a = tl.load(a_ptr + ia[:, None] * d + cols[None, :], mask=ok, other=0.0).to(tl.float32)  # [BLOCK_E, BLOCK_D]
        b = tl.load(b_ptr + ib[:, None] * d + cols[None, :], mask=ok, other=0.0).to(tl.float32)  # [BLOCK_E, BLOCK_D]
        acc += tl.sum(a * b * w[:, None], axis=0)
    slot = tl.load(chunk_slot_ptr + chunk).to(tl.int64)
    if slot >= 0:
        tl.store(out_ptr + slot * d + cols, acc.to(out_ptr.dtype.element_ty), mask=col_ok)
    else:
        tl.store(partial_ptr + (-1 - slot) * d + cols, acc, mask=col_ok)


@triton.jit
def _fixup_rows(partial_ptr, fixup_rows_ptr, fixup_partials_ptr, out_ptr, d: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[row] = sum of the row's partial sums, in chunk order (0 for a row without edges)."""
    i = tl.program_id(0)
    row = tl.load(fixup_rows_ptr + i).to(tl.int64)
    first = tl.load(fixup_partials_ptr + i)
    last = tl.load(fixup_partials_ptr + i + 1)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < d
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    partial = partial_ptr + first.to(tl.int64) * d + cols
    for _ in range(first, last):
        acc += tl.load(partial, mask=col_ok, other=0.0)
        partial += d
    tl.store(out_ptr + row * d + cols, acc.to(out_ptr.dtype.element_ty), mask=col_ok)


def segment_sums(plan: SegmentPlan, a: Tensor, b: Tensor, out_dtype: torch.dtype) -> Tensor:
    """Contiguous a [Na, d], b [Nb, d] -> [plan.num_rows, d] (see the caller's docstring)."""
    d = a.shape[1]
    block_d = triton.next_power_of_2(d)
    num_chunks = plan.chunk_slot.numel()
    num_fixups = plan.fixup_rows.numel()
    out = torch.empty(plan.num_rows, d, dtype=out_dtype, device=a.device)  # [rows, d]
    partial = torch.empty(max(plan.num_partials, 1), d, dtype=torch.float32, device=a.device)  # [partials, d]
    if num_chunks:
        _chunk_sums[(num_chunks,)](a, plan.a_index, b, plan.b_index, plan.weight, plan.chunk_start, plan.chunk_slot, out, partial, d,
                                   BLOCK_E=BLOCK_EDGES, BLOCK_D=block_d, num_warps=NUM_WARPS)
    if num_fixups:
        _fixup_rows[(num_fixups,)](partial, plan.fixup_rows, plan.fixup_partials, out, d, BLOCK_D=block_d, num_warps=NUM_WARPS)
    return out
