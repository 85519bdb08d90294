"""CompGCN neighbour aggregation over a KGGraph, in plain PyTorch (``native``) or DGL (``dgl``).

Both backends compute, for every entity v and each edge direction separately,
``agg_dir[v] = sum_{(u -> v, r) in dir} norm_e * comp(h_u, h_r)`` ([M, d]); the direction-
specific weight matrix is applied afterwards by the layer. That is exact because the
transform is linear (sum_e c_e x_e W = (sum_e c_e x_e) W) and costs an [M, d] x [d, d']
product per direction instead of [E, d] x [d, d'] (FB15k-237: 14.5k rows instead of 544k).
"original" edges carry a relation id < R (h -> t), "inverse" edges an id >= R (t -> h).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from rq_kg_pipeline.kg.graph import KGGraph

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


class NativeMessagePassing:
    """Plain torch: gather endpoints with index_select, sum messages per target with index_add_.

    On CUDA, index_add_ uses atomics (last-bit nondeterminism) unless
    ``torch.use_deterministic_algorithms(True)`` is set, which makes it deterministic.
    """

    def __init__(self, graph: KGGraph, device: torch.device) -> None:
        self.num_entities = graph.num_entities
        self.directions = []  # (src [E_dir], dst [E_dir], rel [E_dir], norm [E_dir, 1]) per direction
        for mask in _direction_masks(graph):
            self.directions.append(
                (
                    graph.src[mask].to(device),
                    graph.dst[mask].to(device),
                    graph.rel[mask].to(device),
                    graph.norm[mask].to(device).unsqueeze(1),
                )
            )

    def _one_direction(self, h: Tensor, rel_table: Tensor, comp: str, edges: tuple[Tensor, ...]) -> Tensor:
        src, dst, rel, norm = edges
        messages = compose(h.index_select(0, src), rel_table.index_select(0, rel), comp) * norm.to(h.dtype)  # [E_dir, d]
        return messages.new_zeros(self.num_entities, messages.shape[1]).index_add_(0, dst, messages)  # [M, d]

    def aggregate(self, h: Tensor, rel_table: Tensor, comp: str) -> tuple[Tensor, Tensor]:
        h, rel_table = at_least_float32(h, rel_table)
        original, inverse = (self._one_direction(h, rel_table, comp, edges) for edges in self.directions)
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
