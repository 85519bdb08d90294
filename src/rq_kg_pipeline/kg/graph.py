"""The training graph as a plain edge list: what both message-passing backends read.

Every training triple (h, r, t) gives two directed edges: h -> t with relation r and
t -> h with the inverse relation r + R, so messages flow both ways and relation ids lie in
[0, 2R). Edges are sorted by (dst, src, rel) so aggregation order, and hence floating-point
results, are reproducible. The edge norm is CompGCN's symmetric normalisation
1 / sqrt(deg(src) * deg(dst)), with deg the in-degree of the graph with inverse edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KGGraph:
    """Directed multigraph over entity ids with typed edges (inverse relations included)."""

    src: torch.Tensor  # [E] int64, message source entity
    dst: torch.Tensor  # [E] int64, message target entity
    rel: torch.Tensor  # [E] int64, relation id in [0, 2R); r + R is the inverse of r
    norm: torch.Tensor  # [E] float32, 1 / sqrt(deg(src) * deg(dst))
    num_entities: int  # M
    num_relations: int  # R, original relations without inverses

    @property
    def num_edges(self) -> int:
        return int(self.src.numel())

    @property
    def device(self) -> torch.device:
        return self.src.device

    def to(self, device: torch.device | str) -> KGGraph:
        return KGGraph(
            self.src.to(device),
            self.dst.to(device),
            self.rel.to(device),
            self.norm.to(device),
            self.num_entities,
            self.num_relations,
        )

    def in_degrees(self) -> torch.Tensor:
        """[M] int64 number of incoming edges per entity (equals out-degree: inverses are in)."""
        return torch.bincount(self.dst, minlength=self.num_entities)

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, so the file loads with ``torch.load(..., weights_only=True)``."""
        return {
            "src": self.src,
            "dst": self.dst,
            "rel": self.rel,
            "norm": self.norm,
            "num_entities": torch.tensor(self.num_entities),
            "num_relations": torch.tensor(self.num_relations),
        }

    @classmethod
    def from_dict(cls, data: dict[str, torch.Tensor]) -> KGGraph:
        missing = {"src", "dst", "rel", "norm", "num_entities", "num_relations"} - set(data)
        if missing:
            raise ValueError(f"graph file lacks the tensors {sorted(missing)}")
        return cls(
            data["src"].long(),
            data["dst"].long(),
            data["rel"].long(),
            data["norm"].float(),
            int(data["num_entities"]),
            int(data["num_relations"]),
        )


def build_graph(train_ids: torch.Tensor, num_entities: int, num_relations: int) -> KGGraph:
    """Training graph from id triples [N, 3] (head, relation, tail), inverse edges added."""
    if train_ids.ndim != 2 or train_ids.shape[1] != 3:
        raise ValueError(f"expected id triples of shape [N, 3], got {tuple(train_ids.shape)}")
    h, r, t = train_ids.long().unbind(dim=1)
    src = torch.cat([h, t])
    dst = torch.cat([t, h])
    rel = torch.cat([r, r + num_relations])
    # Stable sort by (dst, src, rel): one combined key, since ids are bounded.
    key = (dst * num_entities + src) * (2 * num_relations) + rel
    order = torch.argsort(key, stable=True)
    src, dst, rel = src[order], dst[order], rel[order]
    deg = torch.bincount(dst, minlength=num_entities).float()
    inv_sqrt = deg.pow(-0.5)
    inv_sqrt[deg == 0] = 0.0
    norm = inv_sqrt[src] * inv_sqrt[dst]
    return KGGraph(src, dst, rel, norm, num_entities, num_relations)
