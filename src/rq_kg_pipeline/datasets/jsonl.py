"""JSON Lines instruction data: saved by streaming records to the file, loaded as a lazy handle."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from rq_kg_pipeline.pipelines.tracking import log_metrics
from rq_kg_pipeline.prompts.jsonl import read_jsonl, write_jsonl

log = logging.getLogger(__name__)


class JSONLinesFile:
    """A written JSONL file: iterate for records (streamed), ``count()`` for the number of lines.

    ``known_count`` is the count the writer reported, trusted while the file's size and
    modification time are those it left (so a multi-gigabyte file is not read again to count it).
    """

    def __init__(self, path: Path, known_count: tuple[int, int, int] | None = None):
        self.path = path
        self._known = known_count  # (size, mtime_ns, lines)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.path)

    def count(self) -> int:
        stat = self.path.stat()
        if self._known is not None and self._known[:2] == (stat.st_size, stat.st_mtime_ns):
            return self._known[2]
        with open(self.path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


class JSONLinesDataset(AbstractDataset[Iterable[dict[str, Any]], JSONLinesFile]):
    """kedro-datasets' JSON datasets hold a whole table in memory; instruction sets for a large
    KG do not fit, so records stream from a generator (or rendered chunks) to the file, atomically.
    Each save logs its time and size (``jsonl_write_seconds.<file stem>``, ``jsonl_write_mb.<file stem>``)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata
        self._written: tuple[int, int, int] | None = None

    def load(self) -> JSONLinesFile:
        return JSONLinesFile(self._filepath, self._written)

    def save(self, data: Iterable[dict[str, Any]]) -> None:
        started = time.perf_counter()
        count = write_jsonl(data, self._filepath)
        seconds = time.perf_counter() - started
        stat = self._filepath.stat()
        self._written = (stat.st_size, stat.st_mtime_ns, count)
        log.info("%s: %d records, %.2f GB in %.1f s", self._filepath.name, count, stat.st_size / 1e9, seconds)
        stem = self._filepath.stem
        log_metrics({f"jsonl_write_seconds.{stem}": seconds, f"jsonl_write_mb.{stem}": stat.st_size / 2**20})

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def preview(self, nrows: int = 3) -> dict[str, Any]:
        """First records for kedro-viz (prompt and completion, whichever ``record_format`` wrote them)."""
        records = []
        for record in self.load():
            if "prompt" in record:
                records.append({"prompt": record["prompt"], "completion": record.get("completion")})
            else:
                turns = record.get("messages") or [{}, {}]
                records.append({"prompt": turns[0].get("content"), "completion": turns[-1].get("content")})
            if len(records) == nrows:
                break
        return {"records": records}
