"""Entity codes under the seed's file names (see :mod:`rq_kg_pipeline.codes.entity_codes`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset
from kedro_datasets._typing import TablePreview

from rq_kg_pipeline.codes.entity_codes import MANIFEST, EntityCodes, load_entity_codes, save_entity_codes


class EntityCodesDataset(AbstractDataset[EntityCodes, EntityCodes]):
    """A folder of seed-named code files; the file names follow the data (dataset, L, K, Q),
    which a plain filepath dataset cannot express."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> EntityCodes:
        return load_entity_codes(self._path)

    def save(self, data: EntityCodes) -> None:
        save_entity_codes(data, self._path)

    def _exists(self) -> bool:
        return (self._path / MANIFEST).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def preview(self, nrows: int = 10) -> TablePreview:
        """Code table head for kedro-viz: one row per entity (label first), one column per
        position, each cell the position's Q level codes joined by ``-``; reads the codes file
        and sidecar only (not the embeddings, which are large)."""
        sidecar = json.loads((self._path / json.loads((self._path / MANIFEST).read_text())["current"]).read_text())
        codes = torch.load(self._path / sidecar["files"]["codes"], weights_only=True)[:nrows]
        rows = codes.reshape(codes.shape[0], codes.shape[1], -1).tolist()  # [n, L, Q] (VQ files are [n, L])
        labels = sidecar.get("entities") or [str(i) for i in range(len(rows))]
        columns = ["entity", *(f"pos{l + 1}" for l in range(sidecar["seq_len"])), "disambiguation"]
        data = [
            [labels[i], *("-".join(map(str, position)) for position in row), sidecar["disambiguation"][i]]
            for i, row in enumerate(rows)
        ]
        return TablePreview({"columns": columns, "index": list(range(len(rows))), "data": data})
