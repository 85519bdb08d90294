"""Streamed, atomic JSON Lines writing (and reading) of instruction records.

One record per line, UTF-8, ``ensure_ascii=False`` so names stay readable. The characters that
JSON leaves raw but Python's ``str.splitlines`` treats as line breaks (U+0085, U+2028, U+2029)
are written as ``\\u`` escapes, so every reader sees exactly one record per line.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rq_kg_pipeline.io.atomic import atomic_path

_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def to_json_line(record: dict[str, Any]) -> str:
    """``record`` as one JSON line (no trailing newline) with no character any reader takes as a line break."""
    line = json.dumps(record, ensure_ascii=False)
    for raw, escaped in _LINE_BREAKS.items():
        line = line.replace(raw, escaped)
    return line


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path, max_examples: int | None = None) -> int:
    """Write ``records`` (at most ``max_examples``) to ``path`` atomically; return how many were written.

    Records are streamed to a temporary file beside ``path`` that replaces it only once all are
    written, so a crash never leaves a partial file.
    """
    if max_examples is not None and max_examples < 0:
        raise ValueError(f"max_examples must be >= 0 or None, got {max_examples}")
    selected = records if max_examples is None else itertools.islice(records, max_examples)
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for record in selected:
            handle.write(to_json_line(record))
            handle.write("\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON Lines file (blank lines skipped)."""
    with open(path, encoding="utf-8", newline="\n") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON record ({error.msg})") from error
