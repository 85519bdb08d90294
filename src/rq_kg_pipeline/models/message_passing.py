"""CompGCN neighbour aggregation over a KGGraph, in plain PyTorch (``native``) or DGL (``dgl``).

Both backends compute, for every entity v and each edge direction separately,
``agg_dir[v] = sum_{(u -> v, r) in dir} norm_e * comp(h_u, h_r)`` ([M, d]); the direction-
specific weight matrix is applied afterwards by the layer. That is exact because the
transform is linear (sum_e c_e x_e W = (sum_e c_e x_e) W) and costs an [M, d] x [d, d']
product per direction instead of [E, d] x [d, d'] (FB15k-237: 14.5k rows instead of 544k).
"original" edges carry a relation id < R (h -> t), "inverse" edges an id >= R (t -> h).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models import triton_support
from rq_kg_pipeline.models.segment_sums import CHUNK_EDGES, SegmentPlan, segment_sums

COMPOSITIONS = ("mult", "sub", "corr")
BACKENDS = ("native", "dgl")


def check_composition(comp: str) -> str:
    if comp not in COMPOSITIONS:
        raise ValueError(f"comp must be one of {COMPOSITIONS}, got {comp!r}")
    return comp


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def circular_correlation(a: Tensor, b: Tensor) -> Tensor:
    """[..., d] ccorr(a, b)[k] = sum_i a[i] * b[(i + k) mod d], via the real FFT (CompGCN's corr)."""
    d = a.shape[-1]
    return torch.fft.irfft(torch.conj(torch.fft.rfft(a, dim=-1)) * torch.fft.rfft(b, dim=-1), n=d, dim=-1)


def compose(h: Tensor, r: Tensor, comp: str) -> Tensor:
    """CompGCN composition phi(h, r) of entity and relation vectors [..., d] (broadcasting)."""
    if comp == "mult":
        return h * r
    if comp == "sub":
        return h - r
    if comp == "corr":
        return circular_correlation(h, r)
    raise ValueError(f"comp must be one of {COMPOSITIONS}, got {comp!r}")


def at_least_float32(h: Tensor, rel_table: Tensor) -> tuple[Tensor, Tensor]:
    """Both in one dtype of at least float32: under bf16/fp16 autocast, a high-degree entity's
    sum over hundreds of messages would otherwise be accumulated in half precision."""
    dtype = torch.promote_types(torch.promote_types(h.dtype, rel_table.dtype), torch.float32)
    return h.to(dtype), rel_table.to(dtype)


class MessagePassing(Protocol):
    """Per-direction aggregation of norm-weighted composed messages for one fixed graph."""

    def aggregate(self, h: Tensor, rel_table: Tensor, comp: str) -> tuple[Tensor, Tensor]:
        """h [M, d], rel_table [2R, d] -> (agg over original edges [M, d], agg over inverse edges [M, d])."""


def _direction_masks(graph: KGGraph) -> tuple[Tensor, Tensor]:
    original = graph.rel < graph.num_relations  # [E] bool
    return original, ~original


def compose_grouped(summed: Tensor, weight: Tensor, rel: Tensor, comp: str) -> Tensor:
    """sum_e n_e * phi(h_e, r) from summed = sum_e n_e * h_e [P, d] and weight = sum_e n_e [P, 1].

    Exact for every composition: mult and corr are linear in h, and sub gives sum_e n_e (h_e - r).
    """
    if comp == "sub":
        return summed - weight * rel
    return compose(summed, rel, comp)


def sparse_product(matrix: Tensor, x: Tensor, out: Tensor | None = None) -> Tensor:
    """matrix @ x for a sparse CSR matrix [P, N] and a dense float32 x [N, d] -> [P, d], autocast off;
    on CPU into ``out`` when given (contiguous [P, d], overwritten), else into a new tensor.

    On CPU the product is written straight into an uninitialised tensor (beta = 0: MKL never reads
    it): ``matrix @ x`` allocates and zero-fills two more [P, d] buffers first, which took half the
    time of FB15k-237's [93k, 14.5k] x [14.5k, 200] product (25 vs 55 ms, 2 cores). Same values.
    Elsewhere always ``matrix @ x`` (``out`` unused): on CUDA ``torch.mm(..., out=)`` took another
    cuSPARSE route whose sums were not run-to-run identical.
    """
    with torch.autocast(x.device.type, enabled=False):
        if x.device.type != "cpu":
            return matrix @ x
        if out is None:
            out = x.new_empty(matrix.shape[0], x.shape[1])  # [P, d]
        return torch.addmm(out, matrix, x, beta=0, out=out)


class _SparseRows(torch.autograd.Function):
    """y = A @ x for a constant sparse CSR matrix A [P, N] (x [N, d] -> [P, d]); backward A^T @ grad.

    A is a constant with its transpose precomputed, so each pass is one fused, multithreaded
    sparse-dense product (MKL on CPU, cuSPARSE on CUDA); autocast is off inside because sparse
    products have no half-precision kernels on CPU (inputs are float32, see at_least_float32).
    """

    @staticmethod
    def forward(ctx, x: Tensor, matrix: Tensor, transpose: Tensor) -> Tensor:  # noqa: D102
        ctx.transpose = transpose
        return sparse_product(matrix, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102
        return sparse_product(ctx.transpose, grad.float().contiguous()), None, None


class SparseRows:
    """A constant sparse matrix A [P, N] (COO entries, duplicates summed) applied as ``A(x)`` = A @ x."""

    def __init__(self, rows: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int], device: torch.device) -> None:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
            warnings.simplefilter("ignore", UserWarning)
            coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values.float(), shape, check_invariants=True).coalesce()
            self.matrix = coo.to_sparse_csr().to(device)
            self.transpose = coo.t().coalesce().to_sparse_csr().to(device)

    def __call__(self, x: Tensor) -> Tensor:
        return _SparseRows.apply(x, self.matrix, self.transpose)

    def apply_to(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """A @ x [P, d] outside autograd (for autograd functions that combine several products),
        into ``out`` [P, d] (a CPU float32 tensor that may be overwritten) when given."""
        return sparse_product(self.matrix, x, out)

    def apply_transpose_to(self, grad: Tensor) -> Tensor:
        """A^T @ grad [N, d], as ``__call__``'s backward computes it."""
        return sparse_product(self.transpose, grad.float().contiguous())


class _GroupedDirection(NamedTuple):
    """The three sparse maps of one edge direction, over its P distinct (target, relation) pairs."""

    gather: SparseRows  # [P, M]: edge norms; (gather @ h)[p] = sum of the pair's norm-weighted sources
    relation: SparseRows  # [P, 2R]: one-hot; selects each pair's relation vector
    scatter: SparseRows  # [M, P]: one-hot; sums the pairs of each target
    pair_norm: Tensor  # [P, 1] sum of the pair's edge norms (for sub)
    pair_relation: Tensor  # [P] int64 relation id of each pair (the column of its one in ``relation``)


class _GroupedMult(torch.autograd.Function):
    """One direction's ``scatter(gather(h) * relation(rel_table))`` (comp mult) as one autograd op.

    The same products as the three SparseRows maps and the multiplication (same values and
    gradients, bit for bit), but nothing [P, d] is kept for backward: the relation rows are
    gathered with ``index_select`` (exact: each row of ``relation`` is a single 1) and gathered
    again in backward, and on CPU gather(h) is recomputed there into a buffer that is free by then
    (one sparse product, ~8 ms for FB15k-237's largest direction; autograd kept both, 171 MiB for the
    recipe's two layers). On CUDA, where memory is plentiful and the product costs ~0.1 ms of a
    ~9 ms step, gather(h) is kept. Backward makes two [P, d] tensors, forward two (autograd: three and five).
    """

    @staticmethod
    def forward(ctx, h: Tensor, rel_table: Tensor, direction: _GroupedDirection) -> Tensor:  # noqa: D102
        summed = direction.gather.apply_to(h)  # [P, d] sum of each pair's norm-weighted sources
        messages = rel_table.index_select(0, direction.pair_relation).mul_(summed)  # [P, d]
        ctx.save_for_backward(h, rel_table, None if h.device.type == "cpu" else summed)
        ctx.direction = direction
        return direction.scatter.apply_to(messages)  # [M, d]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # noqa: D102
        h, rel_table, summed = ctx.saved_tensors
        d: _GroupedDirection = ctx.direction
        grad_messages = d.scatter.apply_transpose_to(grad)  # [P, d]
        rows = rel_table.index_select(0, d.pair_relation)  # [P, d] relation rows, then other uses
        grad_h = grad_rel = None
        if ctx.needs_input_grad[0]:
            grad_h = d.gather.apply_transpose_to(rows.mul_(grad_messages))  # [M, d] from grad_summed [P, d]
        if ctx.needs_input_grad[1]:
            if summed is None:
                summed = d.gather.apply_to(h, out=rows)  # [P, d] forward's gather(h) again, same bits
            grad_rel = d.relation.apply_transpose_to(grad_messages.mul_(summed))  # [2R, d]
        return grad_h, grad_rel, None


class _TritonMultPlans(NamedTuple):
    """The graph's edges (both directions) grouped three ways, for :class:`_TritonMult`."""

    by_target: SegmentPlan  # rows direction * M + dst; gathers h[src] and rel_table[rel]
    by_source: SegmentPlan  # rows src; gathers grad[direction * M + dst] and rel_table[rel]
    by_relation: SegmentPlan  # rows rel; gathers grad[direction * M + dst] and h[src]

    @classmethod
    def build(cls, graph: KGGraph, device: torch.device, chunk: int = CHUNK_EDGES) -> _TritonMultPlans:
        """Plans for ``graph`` (on CPU) with at most ``chunk`` edges per program, moved to ``device``."""
        m, num_rel = graph.num_entities, 2 * graph.num_relations
        target = (graph.rel >= graph.num_relations).long() * m + graph.dst  # [E] row of [2M, d]
        plans = (
            SegmentPlan.build(target, graph.src, graph.rel, graph.norm, 2 * m, chunk),
            SegmentPlan.build(graph.src, target, graph.rel, graph.norm, m, chunk),
            SegmentPlan.build(graph.rel, target, graph.src, graph.norm, num_rel, chunk),
        )
        return cls(*(plan.to(device) for plan in plans))


class _TritonMult(torch.autograd.Function):
    """Both directions' mult aggregation, [2, M, d], and its gradients as fused Triton segment sums
    (see :mod:`rq_kg_pipeline.models.segment_sums`): no [E, d] or [P, d] tensor, forward or
    backward, and the same sums on every run. The CUDA route of :class:`NativeMessagePassing`.

    Inputs are read in their own dtype and every sum is accumulated in float32. Under autocast
    the result is stored in the autocast dtype: the layer's matrix products would round it to
    that anyway, and their gradients then arrive in it, so every gather reads half the bytes.
    """

    @staticmethod
    def forward(ctx, h: Tensor, rel_table: Tensor, plans: _TritonMultPlans) -> Tensor:  # noqa: D102
        ctx.save_for_backward(h, rel_table)
        ctx.plans = plans
        device = h.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
        return segment_sums(plans.by_target, h, rel_table, dtype).view(2, h.shape[0], -1)  # [2, M, d]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # noqa: D102
        h, rel_table = ctx.saved_tensors
        plans: _TritonMultPlans = ctx.plans
        grad = grad.reshape(-1, grad.shape[-1])  # [2M, d]
        grad_h = segment_sums(plans.by_source, grad, rel_table) if ctx.needs_input_grad[0] else None  # [M, d]
        grad_rel = segment_sums(plans.by_relation, grad, h) if ctx.needs_input_grad[1] else None  # [2R, d]
        return grad_h, grad_rel, None


class NativeMessagePassing:
    """Plain torch, grouped by (target, relation): sum each pair's norm-weighted source vectors,
    compose the sum once with the relation vector, then sum the pairs of each target.

    Exact (see :func:`compose_grouped`) and cheaper than per-edge messages: every step is a fused
    sparse-dense product (no [E, d] tensor, forward or backward), and composition runs over P
    pairs instead of E edges (FB15k-237: ~75k instead of 272k per direction). MKL's CSR products
    are deterministic. ``triton`` (default: on CUDA when Triton is installed) runs mult as
    :class:`_TritonMult` instead: the encoder, mostly cuSPARSE's products, took 2.8 ms of a ~8 ms
    FB15k-237 GPU step (1.1 ms with the Triton route), and two runs of a training step were seen to
    differ in their relation gradient.
    """

    def __init__(self, graph: KGGraph, device: torch.device, triton: bool | None = None) -> None:
        self._graph, self._device = graph.to("cpu"), device
        self.triton = _TritonMultPlans.build(self._graph, device) if triton_support.use_triton(triton, device, "triton") else None
        self._directions: list[_GroupedDirection] | None = None

    @property
    def directions(self) -> list[_GroupedDirection]:
        """The sparse maps of both directions, built on first use (the Triton route needs them only
        for sub and corr, and a large graph's index arrays should not be held twice)."""
        if self._directions is None:
            self._directions = [self._direction(mask) for mask in _direction_masks(self._graph)]
        return self._directions

    def _direction(self, mask: Tensor) -> _GroupedDirection:
        graph, device = self._graph, self._device
        m, num_rel = graph.num_entities, 2 * graph.num_relations
        src, dst, rel, norm = graph.src[mask], graph.dst[mask], graph.rel[mask], graph.norm[mask]
        pair_key, pair_of_edge = torch.unique(dst * num_rel + rel, return_inverse=True)  # [P], [E_dir]
        pairs = torch.arange(pair_key.numel())
        ones = torch.ones(pair_key.numel())
        return _GroupedDirection(
            gather=SparseRows(pair_of_edge, src, norm, (pairs.numel(), m), device),
            relation=SparseRows(pairs, pair_key % num_rel, ones, (pairs.numel(), num_rel), device),
            scatter=SparseRows(pair_key // num_rel, pairs, ones, (m, pairs.numel()), device),
            pair_norm=torch.zeros(pairs.numel()).index_add_(0, pair_of_edge, norm.float()).unsqueeze(1).to(device),
            pair_relation=(pair_key % num_rel).to(device),
        )

    def aggregate(self, h: Tensor, rel_table: Tensor, comp: str) -> tuple[Tensor, Tensor]:
        if comp == "mult" and self.triton is not None:
            original, inverse = _TritonMult.apply(h, rel_table, self.triton)
            return original, inverse
        h, rel_table = at_least_float32(h, rel_table)
        if comp == "mult":  # the recipe's composition: one fused op per direction (see _GroupedMult)
            original, inverse = (_GroupedMult.apply(h, rel_table, d) for d in self.directions)
            return original, inverse
        original, inverse = (
            d.scatter(compose_grouped(d.gather(h), d.pair_norm, d.relation(rel_table), comp))  # [M, d]
            for d in self.directions
        )
        return original, inverse


class DGLMessagePassing:
    """DGL: one DGLGraph per direction (built by ``to_dgl``), apply_edges + update_all(copy_e, sum).

    The PyPI DGL build is CPU-only, so this backend runs on CPU tensors only.
    """

    def __init__(self, graph: KGGraph) -> None:
        from rq_kg_pipeline.kg.dgl_import import import_dgl, to_dgl

        self._dgl = import_dgl()
        self._fn = self._dgl.function
        cpu = graph.to("cpu")
        self.graphs: list[Any] = []
        for mask in _direction_masks(cpu):
            part = KGGraph(cpu.src[mask], cpu.dst[mask], cpu.rel[mask], cpu.norm[mask], cpu.num_entities, cpu.num_relations)
            self.graphs.append(to_dgl(part))

    def _one_direction(self, g: Any, h: Tensor, rel_table: Tensor, comp: str) -> Tensor:
        fn = self._fn
        with g.local_scope():
            g.ndata["h"] = h  # [M, d]
            g.edata["r"] = rel_table.index_select(0, g.edata["rel"])  # [E_dir, d]
            if comp == "mult":
                g.apply_edges(fn.u_mul_e("h", "r", "m"))
            elif comp == "sub":
                g.apply_edges(fn.u_sub_e("h", "r", "m"))
            else:
                g.apply_edges(lambda edges: {"m": compose(edges.src["h"], edges.data["r"], comp)})
            g.edata["m"] = g.edata["m"] * g.edata["norm"].to(h.dtype).unsqueeze(1)  # [E_dir, d]
            g.update_all(fn.copy_e("m", "m"), fn.sum("m", "agg"))
            return g.ndata["agg"]  # [M, d]

    def aggregate(self, h: Tensor, rel_table: Tensor, comp: str) -> tuple[Tensor, Tensor]:
        if h.device.type != "cpu":
            raise ValueError(f"backend 'dgl' runs on CPU only (PyPI dgl is CPU-only); tensors are on {h.device}, use backend='native'")
        h, rel_table = at_least_float32(h, rel_table)
        original, inverse = (self._one_direction(g, h, rel_table, comp) for g in self.graphs)
        return original, inverse


def make_message_passing(graph: KGGraph, backend: str, device: torch.device) -> MessagePassing:
    """The aggregation object for ``graph`` with ``backend``, its index tensors on ``device``."""
    check_backend(backend)
    if backend == "native":
        return NativeMessagePassing(graph, device)
    return DGLMessagePassing(graph)
