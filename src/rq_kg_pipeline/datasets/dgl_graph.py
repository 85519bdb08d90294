"""A ``dgl.DGLGraph`` saved with ``dgl.save_graphs`` (DGL's own binary format, no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from kedro_datasets._typing import JSONPreview

from rq_kg_pipeline.io.atomic import atomic_path
from rq_kg_pipeline.kg.dgl_import import import_dgl


class DGLGraphDataset(AbstractDataset[Any, Any]):
    """One DGL graph per file; DGL is imported through the project's import helper."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> Any:
        graphs, _ = import_dgl().load_graphs(str(self._filepath))
        return graphs[0]

    def save(self, data: Any) -> None:
        # dgl.save_graphs appends no suffix, so the temporary name is written as given.
        with atomic_path(self._filepath) as tmp:
            import_dgl().save_graphs(str(tmp), [data])

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def preview(self) -> JSONPreview:
        """Sizes and edge/node feature names for kedro-viz."""
        graph = self.load()
        outline = {
            "nodes": int(graph.num_nodes()),
            "edges": int(graph.num_edges()),
            "node data": sorted(graph.ndata.keys()),
            "edge data": sorted(graph.edata.keys()),
        }
        return JSONPreview(json.dumps(outline))
