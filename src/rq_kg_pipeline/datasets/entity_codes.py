"""Entity codes under the seed's file names (see :mod:`rq_kg_pipeline.codes.entity_codes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

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

    def preview(self, nrows: int = 10) -> dict[str, Any]:
        """Code table head for kedro-viz: one row per entity, one column per position."""
        bundle = self.load()
        rows = bundle.codes[:nrows].tolist()  # [n, L, Q]
        columns = [f"pos{l + 1}" for l in range(bundle.seq_len)]
        return {"columns": columns, "index": list(range(len(rows))), "data": [["-".join(map(str, p)) for p in r] for r in rows]}
