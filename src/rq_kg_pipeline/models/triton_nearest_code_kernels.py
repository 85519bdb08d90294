"""Triton kernels of :mod:`rq_kg_pipeline.models.nearest_code` (imported only when used).

Search: one program takes BLOCK_M rows of x, walks the K codes in tiles of BLOCK_K, computes the
distances ||e_k||^2 - 2 x.e_k of a [BLOCK_M, BLOCK_K] tile on tensor cores and keeps the running
best two (distance, code) per row: the [N, K] distance matrix is never written. With ``RERANK``
the two are re-scored in exact float32 at the end, so fast TF32 products only have to rank the
true best among the first two. Update: one pass over the rows after a level's search (residual,
squared error, usage counts). Code sums: the chosen codes of all levels added in one pass at the
end. Backward: the residuals of every level and the commitment gradient in one pass. Whether the
kernels run compiled or in Triton's CPU interpreter is fixed when this module is imported
(``TRITON_INTERPRET``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

# Launch configuration, read at every call (so a benchmark can set them on this module and sweep).
BLOCK_M = 64  # rows of x per program (16k rows: 256 programs on the H100's 132 SMs)
BLOCK_K = 128  # codes per distance tile
BLOCK_D = 32  # dimensions per tl.dot step (D = 200: 7 steps, the last one masked)
NUM_WARPS = 4
NUM_STAGES = 3
# Ranking products: "tf32" (one tensor-core product, ~2^-11 relative error per operand: near-tied
# codes swap places), "tf32x3" (three TF32 products, float32-level accuracy at ~2x the time),
# "ieee" (exact float32 FMA on CUDA cores). RERANK re-scores the best two of the ranking in exact
# float32 and keeps the better: with "tf32" the result is then the float32 argmin unless the true
# best ranked third or worse. The previous route, for comparison: "tf32x3" without RERANK.
INPUT_PRECISION = "tf32"
RERANK = True
# Residual update and backward: rows per program and dimensions per step (D = 200: one masked step).
UPDATE_BLOCK_ROWS = 16
UPDATE_BLOCK_D = 256
UPDATE_NUM_WARPS = 4

_NO_INDEX = 2147483647  # larger than any code index: loses every "lowest index" comparison


@triton.jit
def _lowest_argmin(dist, codes, NO_INDEX: tl.constexpr):
    """(min [BLOCK_M], lowest code index reaching it [BLOCK_M]) of dist [BLOCK_M, BLOCK_K] over codes [BLOCK_K]."""
    low = tl.min(dist, axis=1)
    return low, tl.min(tl.where(dist == low[:, None], codes[None, :], NO_INDEX), axis=1)


@triton.jit
def _nearest_code(x_ptr, codes_ptr, codes_sq_ptr, out_ptr, n, k, D: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                  PRECISION: tl.constexpr, RERANK: tl.constexpr, NO_INDEX: tl.constexpr):
    """out[i] = argmin_k (codes_sq[k] - 2 x[i].codes[k]) for the BLOCK_M rows of this program; ties -> lowest k.

    x [n, D] and codes [k, D] float32 contiguous (D constexpr: row offsets are known multiples of D,
    so loads vectorise), codes_sq [k] float32, out [n] int64. Without RERANK the ranking's best is
    written; with it, the exact float32 better of the ranking's best two.
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    row_ok = rows < n
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * D  # [BLOCK_M, 1]
    dims = tl.arange(0, BLOCK_D)  # [BLOCK_D]
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    best_index = tl.zeros([BLOCK_M], dtype=tl.int32)  # stays 0 (a valid index) if no distance is < inf
    second = tl.full([BLOCK_M], float("inf"), tl.float32)
    second_index = tl.zeros([BLOCK_M], dtype=tl.int32)
    for first_code in range(0, k, BLOCK_K):
        codes = first_code + tl.arange(0, BLOCK_K)  # [BLOCK_K]
        code_ok = codes < k
        code_rows = codes_ptr + codes.to(tl.int64)[None, :] * D  # [1, BLOCK_K]
        dots = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for first_dim in range(0, D, BLOCK_D):
            d = first_dim + dims
            d_ok = d < D
            x_tile = tl.load(x_rows + d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
            e_tile = tl.load(code_rows + d[:, None], mask=d_ok[:, None] & code_ok[None, :], other=0.0)  # [BLOCK_D, BLOCK_K]
            dots = tl.dot(x_tile, e_tile, dots, input_precision=PRECISION)
        codes_sq = tl.load(codes_sq_ptr + codes, mask=code_ok, other=0.0)  # [BLOCK_K]
        dist = codes_sq[None, :] - 2.0 * dots  # [BLOCK_M, BLOCK_K]
        dist = tl.where(code_ok[None, :], dist, float("inf"))
        tile_best, tile_index = _lowest_argmin(dist, codes, NO_INDEX)  # [BLOCK_M] each
        # Earlier tiles hold lower indices, so on equal distances the running entries win (strict <).
        new_best = tile_best < best
        if RERANK:  # merge the sorted pairs (best, second) and (tile best, tile second)
            rest = tl.where(codes[None, :] == tile_index[:, None], float("inf"), dist)
            tile_second, tile_second_index = _lowest_argmin(rest, codes, NO_INDEX)
            tile_second_wins = tile_second < best  # the new second if the tile's best is the new best
            tile_best_wins = tile_best < second  # ... if it is not
            second_index = tl.where(new_best, tl.where(tile_second_wins, tile_second_index, best_index),
                                    tl.where(tile_best_wins, tile_index, second_index))
            second = tl.where(new_best, tl.where(tile_second_wins, tile_second, best),
                              tl.where(tile_best_wins, tile_best, second))
        best = tl.where(new_best, tile_best, best)
        best_index = tl.where(new_best, tile_index, best_index)
    if RERANK:  # exact float32 distances of the two candidates: FMA dots over D
        first_rows = codes_ptr + best_index.to(tl.int64)[:, None] * D  # [BLOCK_M, 1]
        second_rows = codes_ptr + second_index.to(tl.int64)[:, None] * D
        acc_first = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        acc_second = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for first_dim in range(0, D, BLOCK_D):
            d = first_dim + dims
            mask = row_ok[:, None] & (d < D)[None, :]
            x_tile = tl.load(x_rows + d[None, :], mask=mask, other=0.0)  # [BLOCK_M, BLOCK_D]
            acc_first += x_tile * tl.load(first_rows + d[None, :], mask=mask, other=0.0)
            acc_second += x_tile * tl.load(second_rows + d[None, :], mask=mask, other=0.0)
        exact_first = tl.load(codes_sq_ptr + best_index) - 2.0 * tl.sum(acc_first, axis=1)  # [BLOCK_M]
        exact_second = tl.load(codes_sq_ptr + second_index) - 2.0 * tl.sum(acc_second, axis=1)
        swap = (exact_second < exact_first) | ((exact_second == exact_first) & (second_index < best_index))
        best_index = tl.where(swap, second_index, best_index)
    tl.store(out_ptr + rows, best_index.to(tl.int64), mask=row_ok)


def nearest_code_into(x: Tensor, codes: Tensor, codes_sq: Tensor, out: Tensor, *, block_m: int | None = None,
                      block_k: int | None = None, block_d: int | None = None, num_warps: int | None = None,
                      num_stages: int | None = None, input_precision: str | None = None,
                      rerank: bool | None = None) -> Tensor:
    """Write the nearest code of each row of x [N, D] into out [N] int64 (checked, contiguous inputs: see the caller).

    Keyword arguments left None take this module's constants at the time of the call."""
    n, dim = x.shape
    block_m = BLOCK_M if block_m is None else block_m
    if n:
        _nearest_code[(triton.cdiv(n, block_m),)](
            x, codes, codes_sq, out, n, codes.shape[0], D=dim,
            BLOCK_M=block_m, BLOCK_K=BLOCK_K if block_k is None else block_k,
            BLOCK_D=BLOCK_D if block_d is None else block_d,
            PRECISION=INPUT_PRECISION if input_precision is None else input_precision,
            RERANK=RERANK if rerank is None else rerank, NO_INDEX=_NO_INDEX,
            num_warps=NUM_WARPS if num_warps is None else num_warps,
            num_stages=NUM_STAGES if num_stages is None else num_stages,
        )
    return out


@triton.jit
def _residual_update(src_ptr, dst_ptr, codes_ptr, idx_ptr, valid_ptr, partial_ptr, counts_ptr, n,
                     D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, WRITE: tl.constexpr,
                     HAS_VALID: tl.constexpr, COUNT: tl.constexpr, WIDE: tl.constexpr):
    """For the BLOCK_R rows i of this program: new = src[i] - codes[idx[i]] (into dst if WRITE), the sum
    of new^2 over its valid rows into partial[program], counts[idx[i]] += 1 per valid row (COUNT;
    integer atomics, so the counts are exact).

    src/dst [n, D] float32, codes [K, D] of the codebook dtype (subtracted as torch does: in float64
    when WIDE, else float32), idx [n] int64, valid [n] uint8, partial [programs] float32, counts [K] int32.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
    row_ok = rows < n
    idx = tl.load(idx_ptr + rows, mask=row_ok, other=0)  # [BLOCK_R]
    counted = row_ok
    if HAS_VALID:
        counted = row_ok & (tl.load(valid_ptr + rows, mask=row_ok, other=0) != 0)
    row_off = rows.to(tl.int64)[:, None] * D  # [BLOCK_R, 1]
    code_off = idx.to(tl.int64)[:, None] * D
    dims = tl.arange(0, BLOCK_D)
    squares = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for first_dim in range(0, D, BLOCK_D):
        d = first_dim + dims
        mask = row_ok[:, None] & (d < D)[None, :]
        e = tl.load(codes_ptr + code_off + d[None, :], mask=mask, other=0.0)  # [BLOCK_R, BLOCK_D] codebook dtype
        r = tl.load(src_ptr + row_off + d[None, :], mask=mask, other=0.0)  # float32
        if WIDE:
            new = (r.to(tl.float64) - e).to(tl.float32)
        else:
            new = r - e.to(tl.float32)
        if WRITE:
            tl.store(dst_ptr + row_off + d[None, :], new, mask=mask)
        squares += new * new  # masked entries are 0 - 0
    row_squares = tl.where(counted, tl.sum(squares, axis=1), 0.0)  # [BLOCK_R]
    tl.store(partial_ptr + pid, tl.sum(row_squares, axis=0))
    if COUNT:
        tl.atomic_add(counts_ptr + idx, tl.full([BLOCK_R], 1, tl.int32), mask=counted)


def update_programs(n: int) -> int:
    """Programs (hence squared-error partial sums) of one residual update over n rows."""
    return triton.cdiv(n, UPDATE_BLOCK_ROWS)


def _block_d(dim: int) -> int:
    return min(UPDATE_BLOCK_D, triton.next_power_of_2(dim))


def residual_update_into(source: Tensor, codes: Tensor, indices: Tensor, partials: Tensor, *, out: Tensor | None,
                         valid: Tensor | None, counts: Tensor | None) -> None:
    """Launch :func:`_residual_update` (checked, contiguous inputs: see the caller)."""
    n, dim = source.shape
    if not n:
        return
    _residual_update[(update_programs(n),)](
        source, source if out is None else out, codes, indices, indices if valid is None else valid, partials,
        partials if counts is None else counts, n, D=dim, BLOCK_R=UPDATE_BLOCK_ROWS, BLOCK_D=_block_d(dim),
        WRITE=out is not None, HAS_VALID=valid is not None, COUNT=counts is not None,
        WIDE=codes.dtype == torch.float64, num_warps=UPDATE_NUM_WARPS,
    )


@triton.jit
def _code_sums(books_ptr, idx_ptr, out_ptr, n, k, Q: tl.constexpr, D: tl.constexpr, BLOCK_R: tl.constexpr,
               BLOCK_D: tl.constexpr, WIDE: tl.constexpr):
    """out[i] = books[0, idx[0, i]] + books[1, idx[1, i]] + ... (level 1 first, each addition rounded to
    the books' dtype after float32 arithmetic, float64 when WIDE: torch's ``add_`` in that order).

    books [Q, k, D] any float dtype, idx [Q, n] int64, out [n, D] of the books' dtype.
    """
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
    row_ok = rows < n
    row_off = rows.to(tl.int64)[:, None] * D  # [BLOCK_R, 1]
    dims = tl.arange(0, BLOCK_D)
    for first_dim in range(0, D, BLOCK_D):
        d = first_dim + dims
        mask = row_ok[:, None] & (d < D)[None, :]
        idx = tl.load(idx_ptr + rows, mask=row_ok, other=0)  # level 1
        total = tl.load(books_ptr + idx[:, None] * D + d[None, :], mask=mask, other=0.0)  # [BLOCK_R, BLOCK_D]
        for q in tl.static_range(1, Q):
            idx = tl.load(idx_ptr + q * n + rows.to(tl.int64), mask=row_ok, other=0)
            e = tl.load(books_ptr + (q * k + idx)[:, None] * D + d[None, :], mask=mask, other=0.0)
            if WIDE:
                total = total + e
            else:
                total = (total.to(tl.float32) + e.to(tl.float32)).to(e.dtype)
        tl.store(out_ptr + row_off + d[None, :], total, mask=mask)


def code_sums_into(books: Tensor, indices: Tensor, out: Tensor) -> Tensor:
    """Launch :func:`_code_sums` (checked, contiguous inputs: see the caller)."""
    levels, num_codes, dim = books.shape
    n = out.shape[0]
    if n:
        _code_sums[(update_programs(n),)](books, indices, out, n, num_codes, Q=levels, D=dim, BLOCK_R=UPDATE_BLOCK_ROWS,
                                          BLOCK_D=_block_d(dim), WIDE=books.dtype == torch.float64,
                                          num_warps=UPDATE_NUM_WARPS)
    return out


@triton.jit
def _level_residuals(z_ptr, books_ptr, idx_ptr, keep_ptr, grad_zq_ptr, commit_ptr, res_ptr, scatter_ptr, grad_ptr,
                     n, k, Q: tl.constexpr, D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                     HAS_KEEP: tl.constexpr, HAS_GRAD_ZQ: tl.constexpr, NEED_Z: tl.constexpr,
                     NEED_BOOKS: tl.constexpr):
    """For the BLOCK_R rows i of this program, level by level from r = z[i]: r -= books[q, idx[q, i]];
    res[q, i] = keep[i] r and scatter[q, i] = q k + idx[q, i] (NEED_BOOKS: what the codebook gradient
    sums); grad[i] = grad_zq[i] + sum_q commit[q] keep[i] r (NEED_Z).

    z [n, D] and grad_zq [n, D] any float dtype, books [Q, k, D] float32, idx and scatter [Q, n] int64,
    keep [n] float32, commit [Q] float32, res [Q, n, D] and grad [n, D] float32.
    """
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
    row_ok = rows < n
    row_off = rows.to(tl.int64)[:, None] * D  # [BLOCK_R, 1]
    keep = tl.full([BLOCK_R], 1.0, tl.float32)
    if HAS_KEEP:
        keep = tl.load(keep_ptr + rows, mask=row_ok, other=0.0)
    if NEED_BOOKS:
        for q in tl.static_range(Q):
            at = q * n + rows.to(tl.int64)  # [BLOCK_R] positions in the [Q, n] tables
            tl.store(scatter_ptr + at, q * k + tl.load(idx_ptr + at, mask=row_ok, other=0), mask=row_ok)
    dims = tl.arange(0, BLOCK_D)
    for first_dim in range(0, D, BLOCK_D):  # every level's residual of these rows, BLOCK_D dimensions at a time
        d = first_dim + dims
        mask = row_ok[:, None] & (d < D)[None, :]
        r = tl.load(z_ptr + row_off + d[None, :], mask=mask, other=0.0).to(tl.float32)  # [BLOCK_R, BLOCK_D]
        acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
        if HAS_GRAD_ZQ:
            acc = tl.load(grad_zq_ptr + row_off + d[None, :], mask=mask, other=0.0).to(tl.float32)
        for q in tl.static_range(Q):
            at = q * n + rows.to(tl.int64)  # [BLOCK_R] rows of the [Q, n] index table and [Q * n, D] residuals
            idx = tl.load(idx_ptr + at, mask=row_ok, other=0)
            e = tl.load(books_ptr + (q * k + idx)[:, None] * D + d[None, :], mask=mask, other=0.0)
            r = r - e
            counted = r
            if HAS_KEEP:
                counted = r * keep[:, None]
            if NEED_BOOKS:
                tl.store(res_ptr + at[:, None] * D + d[None, :], counted, mask=mask)
            if NEED_Z:
                acc += counted * tl.load(commit_ptr + q)
        if NEED_Z:
            tl.store(grad_ptr + row_off + d[None, :], acc, mask=mask)


def level_residuals_into(z: Tensor, books: Tensor, indices: Tensor, commit: Tensor, *, keep: Tensor | None,
                         grad_zq: Tensor | None, res: Tensor | None, scatter: Tensor | None,
                         grad: Tensor | None) -> None:
    """Launch :func:`_level_residuals` (checked, contiguous inputs: see the caller)."""
    n, dim = z.shape
    if not n:
        return
    levels, num_codes, _ = books.shape
    _level_residuals[(triton.cdiv(n, UPDATE_BLOCK_ROWS),)](
        z, books, indices, commit if keep is None else keep, z if grad_zq is None else grad_zq, commit,
        books if res is None else res, indices if scatter is None else scatter, z if grad is None else grad,
        n, num_codes, Q=levels, D=dim, BLOCK_R=UPDATE_BLOCK_ROWS, BLOCK_D=_block_d(dim),
        HAS_KEEP=keep is not None, HAS_GRAD_ZQ=grad_zq is not None, NEED_Z=grad is not None, NEED_BOOKS=res is not None,
        num_warps=UPDATE_NUM_WARPS,
    )
