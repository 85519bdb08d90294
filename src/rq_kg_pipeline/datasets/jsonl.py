"""JSON Lines instruction data: saved by streaming any iterable of records, loaded as a lazy handle."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from rq_kg_pipeline.prompts.jsonl import read_jsonl, write_jsonl


class JSONLinesFile:
    """A written JSONL file: iterate for records (streamed), ``count()`` for the number of lines."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.path)

    def count(self) -> int:
        with open(self.path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


class JSONLinesDataset(AbstractDataset[Iterable[dict[str, Any]], JSONLinesFile]):
    """kedro-datasets' JSON datasets hold a whole table in memory; instruction sets for a large
    KG do not fit, so records stream from a generator to the file (atomically)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> JSONLinesFile:
        return JSONLinesFile(self._filepath)

    def save(self, data: Iterable[dict[str, Any]]) -> None:
        write_jsonl(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def preview(self, nrows: int = 3) -> dict[str, Any]:
        """First records for kedro-viz."""
        records = []
        for record in self.load():
            records.append({"prompt": record.get("prompt"), "completion": record.get("completion")})
            if len(records) == nrows:
                break
        return {"records": records}
