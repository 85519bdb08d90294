"""CompGCN encoder (Vashishth et al., ICLR 2020): entity and relation vectors from the training graph.

Per layer, with composition phi in {mult, sub, corr} and norm the edge normalisation:
  h_v' = dropout(act(BN((agg_orig(v) W_orig + agg_inv(v) W_inv + phi(h_v, h_loop) W_loop) / 3)))
  H_rel' = H_rel W_rel
where agg_dir(v) = sum over edges u -> v of that direction of norm * phi(h_u, h_r); see
:mod:`rq_kg_pipeline.models.message_passing` for why W is applied after the sum, and for the
two backends (plain torch or DGL), which give the same numbers for the same weights.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models.dropout import Dropout
from rq_kg_pipeline.models.message_passing import MessagePassing, check_backend, check_composition, compose, make_message_passing

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "gelu": torch.nn.functional.gelu, "identity": lambda x: x}


def _xavier(*shape: int) -> nn.Parameter:
    weight = torch.empty(*shape)
    nn.init.xavier_normal_(weight)
    return nn.Parameter(weight)


class CompGCNLayer(nn.Module):
    """One CompGCN layer: in_dim -> out_dim for entities and relations."""

    def __init__(self, in_dim: int, out_dim: int, comp: str, dropout: float, activation: str) -> None:
        super().__init__()
        self.comp = check_composition(comp)
        self.w_orig = _xavier(in_dim, out_dim)  # original-direction edges (rel < R)
        self.w_inv = _xavier(in_dim, out_dim)  # inverse edges (rel >= R)
        self.w_loop = _xavier(in_dim, out_dim)  # self-loop
        self.w_rel = _xavier(in_dim, out_dim)  # relation update
        self.loop_rel = _xavier(1, in_dim)  # learned self-loop relation
        self.bn = nn.BatchNorm1d(out_dim)
        self.act = ACTIVATIONS[activation]
        self.drop = Dropout(dropout)

    def forward(self, h: Tensor, rel_table: Tensor, passing: MessagePassing) -> tuple[Tensor, Tensor]:
        """h [M, in], rel_table [2R, in] -> (h' [M, out], rel' [2R, out])."""
        agg_orig, agg_inv = passing.aggregate(h, rel_table, self.comp)  # [M, in] each
        loop = compose(h, self.loop_rel, self.comp)  # [M, in]
        out = (agg_orig @ self.w_orig + agg_inv @ self.w_inv + loop @ self.w_loop) / 3.0  # [M, out]
        return self.drop(self.act(self.bn(out))), rel_table @ self.w_rel


class CompGCNEncoder(nn.Module):
    """Stack of CompGCN layers over learned initial entity [M, init_dim] and relation [2R, init_dim] tables."""

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        init_dim: int = 100,
        gcn_dim: int = 200,
        gcn_layers: int = 2,
        comp: str = "mult",
        dropout: float = 0.1,
        activation: str = "tanh",
        backend: str = "native",
    ) -> None:
        super().__init__()
        for name, value in (("num_entities", num_entities), ("num_relations", num_relations), ("init_dim", init_dim), ("gcn_dim", gcn_dim), ("gcn_layers", gcn_layers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        check_composition(comp)
        self.backend = check_backend(backend)
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.gcn_dim = gcn_dim
        self.ent_init = _xavier(num_entities, init_dim)  # [M, init_dim]
        self.rel_init = _xavier(2 * num_relations, init_dim)  # [2R, init_dim]
        dims = [init_dim] + [gcn_dim] * gcn_layers
        self.layers = nn.ModuleList(CompGCNLayer(dims[i], dims[i + 1], comp, dropout, activation) for i in range(gcn_layers))
        # id(graph) -> (weak reference to it, its prepared aggregation); the entry dies with the graph.
        self._passing_cache: dict[int, tuple[weakref.ref, torch.device, MessagePassing]] = {}

    def __getstate__(self) -> dict:
        """Pickling / deepcopy drop the graph cache (weak references do not pickle; it is rebuilt)."""
        state = dict(super().__getstate__())
        state["_passing_cache"] = {}
        return state

    def _passing(self, graph: KGGraph) -> MessagePassing:
        """The backend's aggregation object for ``graph``, built once per graph object (and device)."""
        device = self.ent_init.device
        key = id(graph)
        hit = self._passing_cache.get(key)
        if hit is not None and hit[0]() is graph and hit[1] == device:
            return hit[2]
        passing = make_message_passing(graph, self.backend, device)
        self._passing_cache[key] = (weakref.ref(graph, lambda _ref, k=key: self._passing_cache.pop(k, None)), device, passing)
        return passing

    def forward(self, graph: KGGraph) -> tuple[Tensor, Tensor]:
        """-> (entity vectors [M, gcn_dim], relation vectors [2R, gcn_dim]) after all layers."""
        if graph.num_entities != self.num_entities or graph.num_relations != self.num_relations:
            raise ValueError(
                f"graph has {graph.num_entities} entities / {graph.num_relations} relations, the encoder was built "
                f"for num_entities={self.num_entities} / num_relations={self.num_relations}"
            )
        passing = self._passing(graph)
        h, rel = self.ent_init, self.rel_init
        for layer in self.layers:
            h, rel = layer(h, rel, passing)
        return h, rel
