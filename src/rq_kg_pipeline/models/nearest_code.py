"""Fused Triton kernels of the residual quantizer: nearest-code search (no [N, K] matrix is written),
the per-level residual update, the sum of the chosen codes, and the backward pass's recomputation.

Used by :mod:`rq_kg_pipeline.models.rq_codebook` on CUDA when Triton is installed; on CPU only when
asked (``TRITON_INTERPRET=1``, as the tests do). No host synchronisation (capturable in a CUDA
graph), deterministic. The search ranks the codes with TF32 tensor-core products and re-scores
its best two in exact float32 (``||e||^2 - 2 x.e``, ties to the lower index): the result is the
float32 argmin unless TF32's errors rank two other codes above the true best (its error would have
to exceed the gap to the third-best code). The kernel module's ``INPUT_PRECISION`` = "tf32x3" with
``RERANK`` = False gives the previous route (three TF32 products, no re-check) for comparison.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from rq_kg_pipeline.models import triton_support

KERNELS_MODULE = "rq_kg_pipeline.models.triton_nearest_code_kernels"


def _kernels() -> ModuleType:
    """The kernel module (imports Triton on first use)."""
    return triton_support.kernels(KERNELS_MODULE)


def _check(name: str, tensor: Tensor, shape: tuple[int, ...], dtype: torch.dtype | None, device: torch.device) -> None:
    """Raise if ``tensor`` is not a contiguous ``shape`` tensor of ``dtype`` (None: any) on ``device``."""
    if tensor.shape != shape or (dtype is not None and tensor.dtype != dtype) or tensor.device != device or not tensor.is_contiguous():
        want = "" if dtype is None else f"{dtype} "
        raise ValueError(f"{name} must be a contiguous {want}{list(shape)} tensor on {device}, "
                         f"got {tensor.dtype} {tuple(tensor.shape)} on {tensor.device}")


def _check_codes(name: str, codes: Tensor, ndim: int, dim: int, device: torch.device) -> None:
    """Raise unless ``codes`` is a contiguous float tensor of ``ndim`` dimensions, the last ``dim``, on ``device``."""
    if codes.ndim != ndim or codes.shape[-1] != dim:
        raise ValueError(f"{name} must have {ndim} dimensions, the last {dim}, got {tuple(codes.shape)}")
    _check(name, codes, tuple(codes.shape), None, device)
    if codes.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise ValueError(f"{name} must be float32, float64, bfloat16 or float16, got {codes.dtype}")


def fused_nearest_code(x: Tensor, codes: Tensor, codes_sq: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """[N] int64 index of the nearest row of ``codes`` [K, D] for each row of ``x`` [N, D], ties to the lowest.

    Both are searched in float32 (converted if needed). ``codes_sq`` [K] float32 (None: computed
    here) is ||e_k||^2; ``out`` [N] int64 contiguous (e.g. a row of a [Q, N] index table) receives
    the result. Only shapes are checked, so no host synchronisation happens.
    """
    if x.ndim != 2 or codes.ndim != 2 or x.shape[1] != codes.shape[1]:
        raise ValueError(f"x must be [N, D] and codes [K, D], got {tuple(x.shape)} and {tuple(codes.shape)}")
    if codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError(f"codes must hold at least one code of at least one dimension, got {tuple(codes.shape)}")
    if codes.device != x.device:
        raise ValueError(f"codes must be on x's device {x.device}, got {codes.device}")
    n, num_codes = x.shape[0], codes.shape[0]
    x = x.to(torch.float32).contiguous()  # [N, D] (no copy when already so)
    codes = codes.to(torch.float32).contiguous()  # [K, D]
    if codes_sq is None:
        codes_sq = codes.pow(2).sum(dim=1)  # [K]
    elif codes_sq.shape != (num_codes,) or codes_sq.dtype != torch.float32 or codes_sq.device != x.device:
        raise ValueError(f"codes_sq must be float32 [{num_codes}] on {x.device}, got {codes_sq.dtype} {tuple(codes_sq.shape)} on {codes_sq.device}")
    codes_sq = codes_sq.contiguous()
    if out is None:
        out = torch.empty(n, dtype=torch.long, device=x.device)
    else:
        _check("out", out, (n,), torch.long, x.device)
    return _kernels().nearest_code_into(x, codes, codes_sq, out)


def update_programs(n: int) -> int:
    """Length of the squared-error partial sums that :func:`fused_residual_update` writes for n rows."""
    return _kernels().update_programs(n)


def fused_residual_update(source: Tensor, codes: Tensor, indices: Tensor, partials: Tensor, *, out: Tensor | None = None,
                          valid: Tensor | None = None, counts: Tensor | None = None) -> None:
    """One level's update after its search, in one kernel: new residual = ``source`` - codes[indices].

    ``source`` [N, D] float32 is the level's residual; ``out`` [N, D] float32 (may be ``source``:
    in place; None: not written, e.g. after the last level) receives the new one, computed as
    torch's ``sub_`` does. ``partials`` [:func:`update_programs` (N)] float32 receives per-row-block
    sums of the new residual's squares over the ``valid`` [N] bool rows (None: all); their sum
    (fixed order, e.g. ``partials.sum()``) is the level's squared error, the same on every run.
    ``counts`` [K] int32 gains 1 per valid row at its code (integer atomics: exact). ``codes``
    [K, D] float32, bfloat16, float16 or float64; ``indices`` [N] int64 in [0, K) (not checked: no sync).
    """
    n, dim = source.shape if source.ndim == 2 else (-1, -1)
    device = source.device
    _check("source", source, (n, dim), torch.float32, device)
    _check_codes("codes", codes, 2, dim, device)
    _check("indices", indices, (n,), torch.long, device)
    _check("partials", partials, (update_programs(n),), torch.float32, device)
    if out is not None:
        _check("out", out, (n, dim), torch.float32, device)
    if counts is not None:
        _check("counts", counts, (codes.shape[0],), torch.int32, device)
    if valid is not None:
        _check("valid", valid, (n,), torch.bool, device)
        valid = valid.view(torch.uint8)
    _kernels().residual_update_into(source, codes, indices, partials, out=out, valid=valid, counts=counts)


def fused_code_sums(books: Tensor, indices: Tensor, out: Tensor | None = None) -> Tensor:
    """[N, D] sum of the chosen code of every level, books[0, indices[0]] + books[1, indices[1]] + ...,
    level 1 first with torch's rounding (``index_select`` then ``add_`` per level, in one pass).

    ``books`` [Q, K, D] float32, bfloat16, float16 or float64; ``indices`` [Q, N] int64 in [0, K)
    (not checked: no sync); ``out`` [N, D] of the books' dtype (None: allocated).
    """
    if books.ndim != 3 or indices.ndim != 2:
        raise ValueError(f"books must be [Q, K, D] and indices [Q, N], got {tuple(books.shape)} and {tuple(indices.shape)}")
    levels, _, dim = books.shape
    n, device = indices.shape[1], books.device
    _check_codes("books", books, 3, dim, device)
    _check("indices", indices, (levels, n), torch.long, device)
    if out is None:
        out = torch.empty(n, dim, dtype=books.dtype, device=device)
    else:
        _check("out", out, (n, dim), books.dtype, device)
    return _kernels().code_sums_into(books, indices, out)


def fused_level_residuals(z: Tensor, books: Tensor, indices: Tensor, commit: Tensor, *, keep: Tensor | None = None,
                          grad_zq: Tensor | None = None, need_books: bool = True,
                          need_z: bool = True) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The backward pass's recomputation in one kernel: (counted [Q * N, D], scatter [Q * N], grad_z [N, D]).

    From r_0 = z [N, D], level q leaves r_{q+1} = r_q - books[q, indices[q]]; counted row q N + i is
    keep[i] r_{q+1, i} and scatter the row q K + indices[q, i] of the flattened [Q * K, D] codebook
    gradient it adds to (``need_books``, else both None); grad_z = grad_zq + sum_q commit[q] counted
    rows (``need_z``, else None; ``grad_zq`` None: 0). ``books`` [Q, K, D] float32, ``indices``
    [Q, N] int64 in [0, K) (not checked), ``commit`` [Q] float32, ``keep`` [N] float32 (None: all 1).
    """
    n, dim = z.shape if z.ndim == 2 else (-1, -1)
    device = z.device
    _check("z", z, (n, dim), None, device)
    if books.ndim != 3 or books.shape[2] != dim:
        raise ValueError(f"books must be [Q, K, {dim}], got {tuple(books.shape)}")
    levels = books.shape[0]
    _check("books", books, tuple(books.shape), torch.float32, device)
    _check("indices", indices, (levels, n), torch.long, device)
    _check("commit", commit, (levels,), torch.float32, device)
    if keep is not None:
        _check("keep", keep, (n,), torch.float32, device)
    if grad_zq is not None:
        _check("grad_zq", grad_zq, (n, dim), None, device)
    counted = torch.empty(levels * n, dim, dtype=torch.float32, device=device) if need_books else None
    scatter = torch.empty(levels * n, dtype=torch.long, device=device) if need_books else None
    grad = torch.empty(n, dim, dtype=torch.float32, device=device) if need_z else None
    _kernels().level_residuals_into(z, books, indices, commit, keep=keep, grad_zq=grad_zq, res=counted,
                                    scatter=scatter, grad=grad)
    return counted, scatter, grad
