"""Streamed, atomic JSON Lines writing (and reading) of instruction records.

One record per line, UTF-8, ``ensure_ascii=False`` so names stay readable. The characters that
JSON leaves raw but Python's ``str.splitlines`` treats as line breaks (U+0085, U+2028, U+2029)
are written as ``\\u`` escapes, so every reader sees exactly one record per line. Records
rendered column-wise (:class:`~rq_kg_pipeline.prompts.columns.JSONLines`) go to disk as their
text buffers, in chunks of tens of megabytes, past the page cache where the OS allows
(:mod:`~rq_kg_pipeline.prompts.direct_write`); other records are serialised one by one.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rq_kg_pipeline.io.atomic import atomic_path
from rq_kg_pipeline.prompts.columns import JSONLines, json_quoted
from rq_kg_pipeline.prompts.direct_write import open_sequential


def to_json_line(record: dict[str, Any]) -> str:
    """``record`` as one JSON line (no trailing newline) with no character any reader takes as a line break."""
    return json_quoted(record)


def _write_rendered(lines: JSONLines, handle: Any, max_examples: int | None) -> int:
    """Stream rendered chunks' bytes to a binary ``handle``, each chunk written in a background
    thread while the next is rendered (both release the GIL for their heavy part); return the
    number of lines written."""
    count = 0
    total = lines.num_records if max_examples is None else min(lines.num_records, max_examples)
    bar = tqdm(total=total, desc="writing JSONL", unit="record", unit_scale=True, leave=False, disable=None)  # terminal only
    with ThreadPoolExecutor(max_workers=1) as writer, bar:
        pending: Future | None = None
        for chunk in lines.chunks():
            if max_examples is not None and count + len(chunk) > max_examples:
                chunk = chunk.head(max_examples - count)
            if pending is not None:
                pending.result()  # one chunk in flight: memory stays at two chunks
            pending = writer.submit(handle.write, chunk.data())
            count += len(chunk)
            bar.update(len(chunk))
            if max_examples is not None and count >= max_examples:
                break
        if pending is not None:
            pending.result()
    if max_examples is None and count != lines.num_records:
        raise ValueError(f"rendered {count} records where {lines.num_records} were announced")
    return count


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path, max_examples: int | None = None) -> int:
    """Write ``records`` (at most ``max_examples``) to ``path`` atomically; return how many were written.

    Records are streamed to a temporary file beside ``path`` that replaces it only once all are
    written, so a crash never leaves a partial file.
    """
    if max_examples is not None and max_examples < 0:
        raise ValueError(f"max_examples must be >= 0 or None, got {max_examples}")
    if isinstance(records, JSONLines):
        with atomic_path(path) as tmp, open_sequential(tmp) as handle:
            return _write_rendered(records, handle, max_examples)
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
