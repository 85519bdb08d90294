"""The project-native training graph (:class:`KGGraph`) as a pickle-free tensor file."""

from __future__ import annotations

import json

from kedro_datasets._typing import JSONPreview

from rq_kg_pipeline.datasets.torch_tensor import TorchTensorDataset
from rq_kg_pipeline.kg.graph import KGGraph


class KGGraphDataset(TorchTensorDataset):
    """Loads and saves a :class:`KGGraph` (edge list + norms) through ``TorchTensorDataset``."""

    def load(self) -> KGGraph:
        return KGGraph.from_dict(super().load())

    def save(self, data: KGGraph) -> None:
        super().save(data.to_dict())

    def preview(self) -> JSONPreview:
        """Sizes for kedro-viz."""
        graph = self.load()
        sizes = {
            "entities": graph.num_entities,
            "relations (without inverses)": graph.num_relations,
            "edges (with inverses)": graph.num_edges,
        }
        return JSONPreview(json.dumps(sizes))
