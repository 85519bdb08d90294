"""Residual vector quantizer (RQ-VAE bottleneck): Q independent codebooks of K codes each.

Level i quantizes the residual r_i left by levels < i (r_1 = z) to its nearest code e_i and
passes on r_{i+1} = r_i - sg[e_i]. Losses per level follow VQ-VAE / RQ-VAE:
codebook ||sg[r_i] - e_i||^2 + beta * commitment ||r_i - sg[e_i]||^2, each a mean over
vectors *and* dimensions (as ``F.mse_loss``), summed over levels.

Why the residual passes on ``sg[e_i]``: each codebook is then trained only by its own
codebook term (as in RQ-VAE, Lee et al. 2022, whose quantizer runs on detached residuals),
and level i's commitment term becomes ||z - sg[e_1 + ... + e_i]||^2, which pulls the
encoder towards every partial reconstruction, coarse to fine. Without the stop-gradient,
level i's commitment term would also move the codes of earlier levels.

The output is straight-through: ``z_q`` has *exactly* the value of the sum of the chosen
codes (as :meth:`RQCodebook.decode_from_codes` computes it) and its gradient w.r.t. z is
the identity.

How it is made fast (1M x 200 latents, Q = 4, K = 1024): the code search runs without
autograd in row chunks (distances ||e||^2 - 2 r.e by one ``addmm`` into a reused float32
buffer, then ``min``; on CUDA with Triton, per level one search kernel that keeps a running best
two per row and one kernel for the residual, error and counts, then one for the code sums,
:mod:`rq_kg_pipeline.models.nearest_code`), so no [N, K] matrix and no per-level [N, D] copy is
kept; the losses and their gradients come from one custom autograd function, whose backward recomputes the
residuals from z and the indices (the gradient of every level's loss is a multiple of the
residual it leaves; with Triton, all levels in one kernel). Usage counts and dead-code revival stay on the device: a training call
makes no host synchronisation once the codebook is initialised.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from rq_kg_pipeline.models import triton_support
from rq_kg_pipeline.models.nearest_code import (
    fused_code_sums, fused_level_residuals, fused_nearest_code, fused_residual_update, update_programs,
)

# Largest [rows, K] float32 distance block materialised at once: on CPU 8 MiB (2048 rows at
# K = 1024: the block is still in cache when ``min`` reads it; measured fastest of 2^19..2^23),
# on CUDA 1 GiB (few, large matrix products).
MAX_DISTANCE_ELEMENTS = 1 << 21
CUDA_MAX_DISTANCE_ELEMENTS = 1 << 28
# Largest [rows, D] block of the residual updates and of the backward pass: on CPU 16 MiB (a
# training call of 16k x 200 latents is one block: few calls, each still cache-friendly).
MAX_UPDATE_ELEMENTS = 1 << 22
CUDA_MAX_UPDATE_ELEMENTS = 1 << 28


class RQOutput(NamedTuple):
    """Everything one quantization call produces (losses, codes, usage statistics)."""

    z_q: Tensor  # [B, L, D] straight-through: value = sum of chosen codes, gradient flows to z
    indices: Tensor  # [B, L, Q] int64
    loss: Tensor  # scalar, sum over levels of (codebook + beta * commitment)
    level_losses: Tensor  # [Q] detached, per-level loss
    utilisation: Tensor  # [Q] share of the K codes used in this call
    perplexity: Tensor  # [Q] exp(entropy of code usage in this call)


class SearchResult(NamedTuple):
    """Result of :func:`residual_search` (all on the input's device)."""

    indices: Tensor  # [N, Q] int64 chosen code per level
    summed: Tensor | None  # [N, D] sum of the chosen codes (codebook dtype, level 1 first)
    sq_error: Tensor  # [Q] float32, sum over rows and dims of r_{i+1}^2 (residual left by level i)
    counts: Tensor  # [Q, K] int64, how often each code was chosen


def chunk_rows(width: int, device: torch.device, max_elements: int | None = None, *, update: bool = False) -> int:
    """Rows per [rows, width] working block: at most ``max_elements`` elements, or the device's
    default for distance blocks (width K) or, with ``update``, for residual blocks (width D)."""
    if max_elements is None:
        cuda = device.type == "cuda"
        if update:
            max_elements = CUDA_MAX_UPDATE_ELEMENTS if cuda else MAX_UPDATE_ELEMENTS
        else:
            max_elements = CUDA_MAX_DISTANCE_ELEMENTS if cuda else MAX_DISTANCE_ELEMENTS
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    return max(1, max_elements // width)


def nearest_code(x: Tensor, codes: Tensor, max_elements: int | None = None, fused: bool | None = None) -> Tensor:
    """[N] int64 index of the nearest row of ``codes`` [K, D] for each row of ``x`` [N, D].

    Squared Euclidean distance ||x||^2 - 2 x.e + ||e||^2 by matmul, in row chunks of at most
    ``max_elements`` distances (device default when None); ||x||^2 is constant per row, so it
    is left out of the search. Ties go to the lowest index, so the result is deterministic.
    Autocast is switched off here: a code is an argmin, and half-precision distances would
    flip codes. (``torch.set_float32_matmul_precision("high")`` would still let CUDA use TF32.)
    ``fused`` picks the search route as in :func:`residual_search`.
    """
    return residual_search(x, codes.unsqueeze(0), max_elements=max_elements, with_sum=False, fused=fused).indices[:, 0]


@torch.no_grad()
def residual_search(
    x: Tensor,
    codebooks: Tensor,
    *,
    max_elements: int | None = None,
    with_sum: bool = True,
    before_level: Callable[[int, Tensor], None] | None = None,
    valid: Tensor | None = None,
    fused: bool | None = None,
) -> SearchResult:
    """Greedy residual quantization of ``x`` [N, D] with ``codebooks`` [Q, K, D], level by level.

    Distances, residuals and errors are float32 whatever the input dtype. ``before_level(q,
    residual)`` is called before level q's search with the float32 residual [N, D] of that
    level (dead-code revival re-seeds codes from it); it may change ``codebooks[q]`` in place, not
    the residual (on the Triton route level 0's is x itself when x is float32).
    ``valid`` [N] bool (None: all) marks the rows that count in ``sq_error`` and ``counts``;
    the others (padding of a fixed-shape batch) are searched but leave no trace.
    ``fused`` (None: on CUDA when Triton is installed) runs each level as two Triton kernels of
    :mod:`~rq_kg_pipeline.models.nearest_code` (search; residual, error and counts) and sums the
    codes in one more, instead of ``addmm`` + ``min`` and row-block updates (``max_elements`` unused).
    """
    if x.ndim != 2 or codebooks.ndim != 3 or x.shape[1] != codebooks.shape[2]:
        raise ValueError(f"x must be [N, D] and codebooks [Q, K, D], got {tuple(x.shape)} and {tuple(codebooks.shape)}")
    n, dim = x.shape
    levels, num_codes, _ = codebooks.shape
    device = x.device
    if triton_support.use_triton(fused, device, "fused"):
        with torch.autocast(device_type=device.type, enabled=False):
            return _kernel_search(x, codebooks, with_sum, before_level, valid)
    rows = min(chunk_rows(num_codes, device, max_elements), max(n, 1))
    block_rows = min(chunk_rows(dim, device, max_elements, update=True), max(n, 1))
    f32 = torch.float32
    with torch.autocast(device_type=device.type, enabled=False):
        residual = x.to(f32, copy=True)  # [N, D], updated in place level by level
        indices = torch.empty(levels, n, dtype=torch.long, device=device)  # [Q, N]: a row per level
        summed = torch.empty(n, dim, dtype=codebooks.dtype, device=device) if with_sum else None
        sq_error = torch.zeros(levels, dtype=f32, device=device)  # [Q]
        dist = torch.empty(rows, num_codes, dtype=f32, device=device)  # reused distance block
        best = torch.empty(rows, dtype=f32, device=device)
        chosen = torch.empty(block_rows, dim, dtype=codebooks.dtype, device=device)  # reused code rows
        keep = None if valid is None else valid.to(f32).unsqueeze(1)  # [N, 1] 1 for a counted row
        for q in range(levels):
            if before_level is not None:
                before_level(q, residual)
            codes = codebooks[q]  # [K, D] native dtype (the values summed into z_q)
            codes32 = codes.to(f32)
            codes_sq = codes32.pow(2).sum(dim=1).unsqueeze(0)  # [1, K]
            for start in range(0, n, rows):  # search: distances block by block, kept in cache
                stop = min(start + rows, n)
                m = stop - start
                torch.addmm(codes_sq, residual[start:stop], codes32.t(), beta=1.0, alpha=-2.0, out=dist[:m])  # [m, K]
                torch.min(dist[:m], dim=1, out=(best[:m], indices[q, start:stop]))
            for start in range(0, n, block_rows):  # update: r <- r - e, error, running code sum
                stop = min(start + block_rows, n)
                m = stop - start
                torch.index_select(codes, 0, indices[q, start:stop], out=chosen[:m])  # [m, D]
                block = residual[start:stop]
                block.sub_(chosen[:m])
                flat_block = block.reshape(-1)
                counted = flat_block if keep is None else (block * keep[start:stop]).reshape(-1)
                sq_error[q].add_(torch.dot(counted, flat_block))
                if summed is not None:
                    if q == 0:
                        summed[start:stop].copy_(chosen[:m])
                    else:
                        summed[start:stop].add_(chosen[:m])
        offsets = (torch.arange(levels, device=device) * num_codes).unsqueeze(1)  # [Q, 1]
        counts = torch.zeros(levels * num_codes, dtype=torch.long, device=device)
        ones = torch.ones(1, dtype=torch.long, device=device).expand(n) if valid is None else valid.long()  # [N]
        counts.index_add_(0, (indices + offsets).reshape(-1), ones.expand(levels, n).reshape(-1))
    return SearchResult(indices.t(), summed, sq_error, counts.reshape(levels, num_codes))


def _kernel_search(
    x: Tensor, codebooks: Tensor, with_sum: bool, before_level: Callable[[int, Tensor], None] | None, valid: Tensor | None
) -> SearchResult:
    """:func:`residual_search` on the Triton route: per level one search and one update kernel over all
    rows, then one kernel for the code sums (the codes of level q are not changed after its search).

    Level 0 reads x itself when it is float32 (no copy); the last level's residual is not written;
    squared errors are per-row-block partial sums added in a fixed order; counts by integer atomics.
    """
    n, dim = x.shape
    levels, num_codes, _ = codebooks.shape
    device = x.device
    f32 = torch.float32
    source = x.to(f32).contiguous()  # [N, D] the residual of level 0 (read only)
    residual = torch.empty(n, dim, dtype=f32, device=device) if levels > 1 else None  # [N, D] levels >= 1
    indices = torch.empty(levels, n, dtype=torch.long, device=device)  # [Q, N]: a row per level
    partials = torch.empty(levels, update_programs(n), dtype=f32, device=device)  # [Q, P] squared-error parts
    counts = torch.zeros(levels, num_codes, dtype=torch.int32, device=device)  # [Q, K]
    valid = None if valid is None else valid.to(torch.bool).contiguous()  # [N]
    for q in range(levels):
        if before_level is not None:
            before_level(q, source)
        codes = codebooks[q].contiguous()  # [K, D] native dtype (the values summed into z_q)
        codes32 = codes.to(f32)
        fused_nearest_code(source, codes32, codes32.pow(2).sum(dim=1), out=indices[q])
        out = residual if q + 1 < levels else None
        fused_residual_update(source, codes, indices[q], partials[q], out=out, valid=valid, counts=counts[q])
        source = source if out is None else out
    summed = fused_code_sums(codebooks.contiguous(), indices) if with_sum else None  # [N, D]
    return SearchResult(indices.t(), summed, partials.sum(dim=1), counts.long())


class _ResidualQuantize(torch.autograd.Function):
    """Straight-through z_q and per-level losses of a finished search, with their gradients.

    Forward returns the search's code sum and (1 + beta) * sq_error / (N * D). Backward: level
    i's loss has gradient -2 r_{i+1} / (N D) w.r.t. the chosen code rows (codebook term) and
    2 beta r_{i+1} / (N D) w.r.t. z (commitment term, through r_i = z - sg[...]); the
    residuals are recomputed in row blocks from z, a copy of the codebooks and the indices.
    With ``valid`` [N] bool, N counts the valid rows only and the others get no gradient.
    ``fused``: the recomputation runs as one Triton kernel per row block (every level's residual
    and the z gradient) and one ``index_add_`` for the codebook gradients of all levels.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, codebooks: Tensor, found: SearchResult, beta: float, rows: int, valid: Tensor | None,  # type: ignore[override]
                fused: bool = False):
        n, dim = flat.shape
        ctx.beta, ctx.rows, ctx.fused = beta, rows, fused
        ctx.set_materialize_grads(False)
        keep = None if valid is None else valid.to(torch.float32)  # [N]
        ctx.save_for_backward(flat, codebooks.detach().clone(), found.indices.t(), keep)  # codes as used; [Q, N]
        if keep is None:
            losses = found.sq_error * ((1.0 + beta) / (n * dim))  # [Q]
        else:  # the count of valid rows stays on the device: no host sync
            losses = found.sq_error * (1.0 + beta) / (keep.sum() * dim)
        return found.summed, losses

    @staticmethod
    def backward(ctx, grad_zq: Tensor | None, grad_losses: Tensor | None):  # type: ignore[override]
        flat, books, indices, keep = ctx.saved_tensors  # [N, D], [Q, K, D], [Q, N], [N] or None
        need_z, need_books = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if grad_losses is None:
            return (grad_zq if need_z else None), None, None, None, None, None, None
        n, dim = flat.shape
        levels = books.shape[0]
        f32 = torch.float32
        if keep is None:
            scale = grad_losses.to(f32) * (2.0 / (n * dim))  # [Q]
        else:
            scale = grad_losses.to(f32) * 2.0 / (keep.sum() * dim)
        commit = scale * ctx.beta  # [Q]
        books32 = books.to(f32)
        if ctx.fused:
            grad_flat, grad_books = _fused_backward(flat, books32, indices, keep, grad_zq, commit, ctx.rows, need_z, need_books)
            if need_books:
                grad_books = grad_books.mul_(-scale.view(levels, 1, 1)).to(books.dtype)
            if need_z:
                grad_flat = grad_flat.to(flat.dtype)
            return grad_flat, grad_books, None, None, None, None, None
        grad_books = torch.zeros(books.shape, dtype=f32, device=books.device) if need_books else None
        grad_flat = torch.empty(n, dim, dtype=f32, device=flat.device) if need_z else None
        for start in range(0, n, ctx.rows):
            stop = min(start + ctx.rows, n)
            residual = flat[start:stop].to(f32, copy=True)  # [m, D]
            acc = None
            if need_z:
                acc = grad_flat[start:stop]
                if grad_zq is None:
                    acc.zero_()
                else:
                    acc.copy_(grad_zq[start:stop])
            rows_kept = None if keep is None else keep[start:stop].unsqueeze(1)  # [m, 1]
            for q in range(levels):
                idx = indices[q, start:stop]
                residual.sub_(books32[q].index_select(0, idx))  # r_{q+1} rows
                counted = residual if rows_kept is None else residual * rows_kept
                if need_books:
                    grad_books[q].index_add_(0, idx, counted)
                if need_z:
                    acc.addcmul_(counted, commit[q])
        if need_books:
            grad_books = grad_books.mul_(-scale.view(levels, 1, 1)).to(books.dtype)
        if need_z:
            grad_flat = grad_flat.to(flat.dtype)
        return grad_flat, grad_books, None, None, None, None, None


def _fused_backward(flat: Tensor, books32: Tensor, indices: Tensor, keep: Tensor | None, grad_zq: Tensor | None,
                    commit: Tensor, rows: int, need_z: bool, need_books: bool) -> tuple[Tensor | None, Tensor | None]:
    """(grad_z [N, D] float32 or None, sum of each code's counted residuals [Q, K, D] float32 or None) of
    :class:`_ResidualQuantize` by :func:`~rq_kg_pipeline.models.nearest_code.fused_level_residuals`, in
    blocks of ``rows // Q`` rows (the kernel writes a [Q * block, D] table of residuals)."""
    n, dim = flat.shape
    levels, num_codes, _ = books32.shape
    flat, books32, commit = flat.contiguous(), books32.contiguous(), commit.contiguous()
    grad_zq = None if grad_zq is None else grad_zq.contiguous()
    block = max(1, rows // levels)
    grad_books = torch.zeros(levels * num_codes, dim, dtype=torch.float32, device=flat.device) if need_books else None
    one_block = 0 < n <= block
    grad_flat = torch.empty(n, dim, dtype=torch.float32, device=flat.device) if need_z and not one_block else None
    for start in range(0, n, block):
        stop = min(start + block, n)
        counted, scatter, grad = fused_level_residuals(
            flat[start:stop], books32, indices[:, start:stop].contiguous(), commit,
            keep=None if keep is None else keep[start:stop], grad_zq=None if grad_zq is None else grad_zq[start:stop],
            need_books=need_books, need_z=need_z,
        )  # [Q * m, D], [Q * m], [m, D]
        if need_books:
            grad_books.index_add_(0, scatter, counted)
        if need_z:
            if one_block:  # its gradient is the whole
                grad_flat = grad
            else:
                grad_flat[start:stop].copy_(grad)
    return grad_flat, None if grad_books is None else grad_books.view(levels, num_codes, dim)


def sample_vectors(x: Tensor, count: int) -> Tensor:
    """``count`` rows drawn from ``x`` [N, D] with torch's RNG: distinct rows when N >= count.

    When N < count, rows are drawn with replacement and Gaussian noise of 1% of the data's
    RMS is added so that repeated rows give distinct (not tied) codes. No host sync.
    """
    n = x.shape[0]
    if n >= count:
        return x[torch.randperm(n, device=x.device)[:count]].clone()
    picked = x[torch.randint(0, n, (count,), device=x.device)]  # [count, D]
    scale = 0.01 * x.pow(2).mean().sqrt() + 1e-6
    return picked + scale * torch.randn_like(picked)


def kmeans(x: Tensor, num_clusters: int, iters: int, fused: bool | None = None) -> Tensor:
    """[K, D] centroids of ``x`` [N, D] by Lloyd's algorithm from :func:`sample_vectors` seeds.

    A cluster that loses all its points keeps its previous centroid. ``fused``: the search route
    of :func:`residual_search`.
    """
    centroids = sample_vectors(x, num_clusters)  # [K, D]
    for _ in range(iters):
        assign = nearest_code(x, centroids, fused=fused)  # [N]
        counts = torch.bincount(assign, minlength=num_clusters)  # [K]
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # [K, D]
        means = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
        centroids = torch.where((counts > 0).unsqueeze(1), means, centroids)
    return centroids


class RQCodebook(nn.Module):
    """Residual quantizer with k-means initialisation and dead-code revival (Q = 1: plain VQ).

    ``initialised`` (buffer) says the codebook holds values the data-dependent init must not
    overwrite; it is saved in ``state_dict``, so a loaded checkpoint is never re-initialised.
    ``steps_since_used`` [Q, K] (buffer) counts training calls since each code was chosen; a
    code unused for ``dead_code_patience`` calls is re-seeded, before that level's search, from
    randomly chosen residuals of that level (so it is used at once). Its optimiser moments are
    left as they are. Both happen in training mode only; eval mode changes no state.
    ``max_elements`` bounds every working block, [rows, K] distances and [rows, D] residual
    updates (None: the device's defaults, which keep a 16k x 200 training call in one block).
    ``fused_search`` (attribute too) picks the route of :func:`residual_search` and of the backward
    pass (None: the fused Triton kernels on CUDA when Triton is installed, else torch ops).
    """

    def __init__(
        self,
        num_codes: int,
        latent_dim: int,
        num_quantizers: int = 4,
        beta: float = 0.25,
        *,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        revive_dead_codes: bool = True,
        dead_code_patience: int = 50,
        max_elements: int | None = None,
        fused_search: bool | None = None,
    ) -> None:
        super().__init__()
        if num_codes < 2:
            raise ValueError(f"num_codes must be >= 2, got {num_codes}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be >= 0, got {kmeans_iters}")
        if dead_code_patience < 1:
            raise ValueError(f"dead_code_patience must be >= 1, got {dead_code_patience}")
        if max_elements is not None and max_elements < 1:
            raise ValueError(f"max_elements must be >= 1 or None, got {max_elements}")
        self.num_codes = num_codes
        self.latent_dim = latent_dim
        self.num_quantizers = num_quantizers
        self.beta = beta
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.revive_dead_codes = revive_dead_codes
        self.dead_code_patience = dead_code_patience
        self.max_elements = max_elements
        self.fused_search = fused_search
        # The reference's uniform +-1/K start; replaced by k-means on the first training call.
        self.codebooks = nn.Parameter(
            torch.empty(num_quantizers, num_codes, latent_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        )  # [Q, K, D]
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        self.register_buffer("steps_since_used", torch.zeros(num_quantizers, num_codes, dtype=torch.long))
        self._known_initialised = not kmeans_init  # host copy of ``initialised`` once seen True (no sync)

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, latent_dim={self.latent_dim}, num_quantizers={self.num_quantizers}, "
            f"beta={self.beta}, kmeans_init={self.kmeans_init}, revive_dead_codes={self.revive_dead_codes}, "
            f"dead_code_patience={self.dead_code_patience}"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._known_initialised = False  # re-read the loaded flag on the next training call

    # ----------------------------------------------------------------------------- helpers
    def _flatten(self, z: Tensor) -> Tensor:
        """[..., D] -> [N, D] in the codebook's dtype, after checking the shape."""
        if z.ndim < 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape [B, L, {self.latent_dim}], got {tuple(z.shape)}")
        if z.numel() == 0:
            raise ValueError(f"z must hold at least one vector, got shape {tuple(z.shape)}")
        return z.reshape(-1, self.latent_dim).to(self.codebooks.dtype)

    def _is_initialised(self) -> bool:
        """The ``initialised`` buffer, read from the device only until it is first seen True."""
        if not self._known_initialised:
            self._known_initialised = bool(self.initialised)
        return self._known_initialised

    @torch.no_grad()
    def _kmeans_initialise(self, flat: Tensor) -> None:
        """Level by level: k-means on that level's residuals, then subtract the chosen centroids."""
        residual = flat  # [N, D]
        for q in range(self.num_quantizers):
            centroids = kmeans(residual, self.num_codes, self.kmeans_iters, fused=self.fused_search)  # [K, D]
            self.codebooks[q].copy_(centroids)
            residual = residual - centroids[nearest_code(residual, centroids, self.max_elements, self.fused_search)]
        self.initialised.fill_(True)
        self.steps_since_used.zero_()
        self._known_initialised = True

    @torch.no_grad()
    def _revive(self, level: int, residual: Tensor, dead: Tensor, rows: Tensor | None) -> None:
        """Re-seed the ``dead`` [Q, K] codes of ``level`` from its residuals [N, D].

        Candidates are drawn every call and kept only where a code is dead (``torch.where``),
        so no host sync decides whether any code is dead: rows ``rows[level]`` [K] of the
        residual, or with N < K (``rows`` None) :func:`sample_vectors`.
        """
        fresh = sample_vectors(residual, self.num_codes) if rows is None else residual.index_select(0, rows[level])  # [K, D]
        book = self.codebooks[level]  # [K, D]
        book.copy_(torch.where(dead[level].unsqueeze(1), fresh.to(book.dtype), book))

    def _revival_plan(self, n: int, device: torch.device, valid: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(dead [Q, K] bool, candidate rows [Q, K] or None) for a training call over n vectors.

        One random permutation per call; level q takes the rows at positions qK .. qK + K - 1
        (mod n): distinct within a level (n >= K), and across levels while n >= QK. With
        ``valid`` [n] bool (a padded batch, whose valid rows the caller guarantees number >= K),
        the permutation is of the valid rows only, computed without a host sync.
        """
        dead = self.steps_since_used >= self.dead_code_patience  # [Q, K]
        positions = torch.arange(self.num_quantizers * self.num_codes, device=device)  # [QK]
        if valid is not None:  # random keys, valid rows first: a random order of the valid rows
            order = (torch.rand(n, device=device) - valid.to(torch.float32)).argsort()  # [n]
            rows = order.index_select(0, positions % valid.sum())
            return dead, rows.view(self.num_quantizers, self.num_codes)
        if n < self.num_codes:
            return dead, None
        rows = torch.randperm(n, device=device).index_select(0, positions % n).view(self.num_quantizers, self.num_codes)
        return dead, rows

    @torch.no_grad()
    def _mark_used(self, counts: Tensor, revived: Tensor | None) -> None:
        """counts [Q, K]: one more call for every code (revived ones restart), zero for the codes chosen."""
        if revived is not None:
            self.steps_since_used.masked_fill_(revived, 0)
        self.steps_since_used.add_(1).masked_fill_(counts > 0, 0)

    # ------------------------------------------------------------------------------ public
    def quantize(self, z: Tensor, valid: Tensor | None = None) -> RQOutput:
        """Quantize z [B, L, D]; in training mode also k-means-initialises once and revives dead codes.

        ``valid`` [B] bool (None: all) marks the sequences that count: the others (padding that
        gives a training batch a fixed shape) are quantized but add nothing to the losses, the
        gradients, the usage statistics or the revival candidates. A padded call needs at least
        K valid vectors when it revives dead codes, and must not be the k-means-initialising one
        if it is recorded in a CUDA graph (initialisation reads the host).
        """
        lead = z.shape[:-1]
        flat = self._flatten(z)  # [N, D]
        rows_valid = None  # [N] bool
        if valid is not None:
            if valid.shape != lead[:1]:
                raise ValueError(f"valid must have shape [{lead[0]}] (one flag per sequence), got {tuple(valid.shape)}")
            rows_valid = valid.view(-1, *([1] * (len(lead) - 1))).expand(lead).reshape(-1)
        if self.training and not self._is_initialised():
            self._kmeans_initialise(flat.detach() if rows_valid is None else flat.detach()[rows_valid])
        revive, dead = None, None
        if self.training and self.revive_dead_codes:
            dead, rows = self._revival_plan(flat.shape[0], flat.device, rows_valid)
            revive = partial(self._revive, dead=dead, rows=rows)
        fused = triton_support.use_triton(self.fused_search, flat.device, "fused_search")
        found = residual_search(
            flat.detach(), self.codebooks.detach(), max_elements=self.max_elements, before_level=revive, valid=rows_valid,
            fused=fused,
        )
        rows = chunk_rows(self.latent_dim, flat.device, self.max_elements, update=True)
        z_q, losses = _ResidualQuantize.apply(flat, self.codebooks, found, self.beta, rows, rows_valid, fused)  # [N, D], [Q]
        if self.training:
            self._mark_used(found.counts, dead)
        counts = found.counts.to(flat.dtype)  # [Q, K]
        probs = counts / (flat.shape[0] if rows_valid is None else rows_valid.sum())
        entropy = -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)  # [Q]
        return RQOutput(
            z_q.reshape(*lead, self.latent_dim),
            found.indices.reshape(*lead, self.num_quantizers),
            losses.sum(),
            losses.detach(),
            (found.counts > 0).to(flat.dtype).mean(dim=1),
            entropy.exp(),
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The seed's API: ``(z_q [B, L, D], indices [B, L, Q], loss)``."""
        out = self.quantize(z)
        return out.z_q, out.indices, out.loss

    @torch.no_grad()
    def search(self, z: Tensor, with_sum: bool = True) -> SearchResult:
        """The residual search of z [..., D] as [N, D] rows, without init, revival or gradient: codes
        [N, Q], their sum [N, D] (``with_sum``; bit for bit :meth:`decode_from_codes` of the codes),
        each level's squared error [Q] and code counts."""
        return residual_search(self._flatten(z), self.codebooks, max_elements=self.max_elements, with_sum=with_sum,
                               fused=self.fused_search)

    def cal_codes(self, z: Tensor) -> Tensor:
        """[B, L, Q] int64 codes of z [B, L, D]; no init, no revival, no gradient."""
        return self.search(z, with_sum=False).indices.reshape(*z.shape[:-1], self.num_quantizers)

    @torch.no_grad()
    def cal_code_emds(self, z: Tensor) -> Tensor:
        """[B, L, D] sum of the chosen codes of z (no straight-through term)."""
        return self.decode_from_codes(self.cal_codes(z))

    def _check_indices(self, indices: Tensor) -> None:
        if indices.shape[-1:] != (self.num_quantizers,):
            raise ValueError(f"indices must end with num_quantizers={self.num_quantizers}, got {tuple(indices.shape)}")
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"indices must lie in [0, num_codes={self.num_codes})")

    def _gather(self, indices: Tensor) -> Tensor:
        """[..., Q] valid codes -> [..., Q, D] code vectors (no checks)."""
        levels = torch.arange(self.num_quantizers, device=indices.device)  # [Q], broadcast over [..., Q]
        return self.codebooks[levels, indices.long()]

    @staticmethod
    def _sum_levels(vectors: Tensor) -> Tensor:
        """[..., Q, D] -> [..., D], level 1 first: the one summation order used everywhere."""
        total = vectors[..., 0, :]
        for q in range(1, vectors.shape[-2]):
            total = total + vectors[..., q, :]
        return total

    def level_code_vectors(self, indices: Tensor) -> Tensor:
        """[B, L, Q] codes -> [B, L, Q, D]: the chosen code vector of each level."""
        self._check_indices(indices)
        return self._gather(indices)

    def decode_from_codes(self, indices: Tensor) -> Tensor:
        """[B, L, Q] codes -> [B, L, D] sum of the chosen codes (equals cal_code_emds bit for bit).

        Level by level into one output (``index_select`` of level 1, then ``add_`` of each next
        level: the additions of :meth:`_sum_levels`, in its order), in cache-sized row blocks,
        without the [B, L, Q, D] table of :meth:`level_code_vectors` (with autograd on: the gather).
        """
        self._check_indices(indices)
        flat = indices.reshape(-1, self.num_quantizers).long()  # [N, Q]
        if torch.is_grad_enabled() and self.codebooks.requires_grad:  # autograd wants the gather-and-sum graph
            return self._sum_levels(self._gather(indices))
        books = self.codebooks.detach()  # [Q, K, D]
        n = flat.shape[0]
        out = torch.empty(n, self.latent_dim, dtype=books.dtype, device=books.device)  # [N, D]
        rows = chunk_rows(self.latent_dim, books.device, self.max_elements, update=True) // 4 or 1
        level = torch.empty(min(rows, max(n, 1)), self.latent_dim, dtype=books.dtype, device=books.device)  # reused
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            torch.index_select(books[0], 0, flat[start:stop, 0], out=out[start:stop])
            for q in range(1, self.num_quantizers):
                torch.index_select(books[q], 0, flat[start:stop, q], out=level[: stop - start])
                out[start:stop].add_(level[: stop - start])
        return out.reshape(*indices.shape[:-1], self.latent_dim)
