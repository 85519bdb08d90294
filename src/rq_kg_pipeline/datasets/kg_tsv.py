"""Read-only dataset for raw KG TSV files (triples or names), validated line by line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from rq_kg_pipeline.kg.tsv import NAME_COLUMNS, read_names, read_triples


class KGTableDataset(AbstractDataset[None, pd.DataFrame]):
    """``kind: triples`` -> DataFrame[head, relation, tail, line]; ``kind: names`` -> DataFrame[id, name, line].

    kedro-datasets' CSV reader cannot report the file and line of a bad record, nor tell an
    undecodable byte from a bad field, so raw KG files get this strict reader (``kg.tsv``).
    With ``optional: true`` a missing file loads as an empty table (a KG without names).
    """

    def __init__(
        self,
        filepath: str,
        kind: Literal["triples", "names"] = "triples",
        optional: bool = False,
        metadata: dict[str, Any] | None = None,
    ):
        if kind not in ("triples", "names"):
            raise DatasetError(f"KGTableDataset: kind must be 'triples' or 'names', got {kind!r}")
        self._filepath = Path(filepath)
        self._kind = kind
        self._optional = optional
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        if self._optional and not self._filepath.exists():
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in NAME_COLUMNS})
            empty["line"] = pd.Series(dtype="int64")
            empty.attrs["source"] = str(self._filepath)
            return empty
        return read_triples(self._filepath) if self._kind == "triples" else read_names(self._filepath)

    def save(self, data: pd.DataFrame) -> None:
        raise DatasetError(f"{self._filepath} is raw input: KGTableDataset does not write it")

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "kind": self._kind, "optional": self._optional}

    def preview(self, nrows: int = 5) -> TablePreview:
        """First ``nrows`` records for kedro-viz (columns, index, data: pandas' split layout)."""
        return TablePreview(self.load().head(nrows).to_dict(orient="split"))
