"""Vectorised JSON Lines: records are rows of text pieces gathered from one table of pre-escaped
text, so no record is built or serialised in a Python loop.

Every name, code rendering and template piece is JSON-escaped once (escaping acts per
character, so the concatenation of escaped pieces is the escaped concatenation). A chunk of
records is an index matrix [records, pieces per record] into that table; one Arrow ``take``
copies the pieces back to back, and that buffer is exactly the chunk's lines, ready for the
file. U+0085, U+2028 and U+2029, which JSON leaves raw but Python's ``str.splitlines`` treats
as line breaks, are written as ``\\u`` escapes, so every reader sees one record per line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
Column = int | str | np.ndarray  # a piece id for every row, a constant text, or piece ids [N]


def json_quoted(value: Any) -> str:
    """``value`` as JSON text (UTF-8 kept readable) with no character any reader takes as a line break."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in _LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text


def json_escaped(text: str) -> str:
    """The inside of ``text``'s JSON string (no quotes), to be joined with other escaped pieces."""
    return json_quoted(str(text))[1:-1]


class PieceTable:
    """Every piece of text a record layout uses, in one Arrow table; a section of pieces is
    addressed by its first id, a constant by its own id."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._constants: dict[str, int] = {}
        self._array: pa.Array | None = None

    def section(self, texts: Sequence[str]) -> int:
        """Append ``texts``; return the id of the first (piece i of the section is ``start + i``)."""
        if self._array is not None:
            raise ValueError("the piece table is frozen: sections must be added before rendering")
        start = len(self._texts)
        self._texts.extend(texts)
        return start

    def constant(self, text: str) -> int:
        """The id of a piece of fixed text (added once)."""
        if text not in self._constants:
            self._constants[text] = self.section([text])
        return self._constants[text]

    def array(self) -> pa.Array:
        if self._array is None:
            self._array = pa.array(self._texts, pa.string())
        return self._array


@dataclass(frozen=True)
class Chunk:
    """Rendered records: ``pieces`` [records * per_record] whose text, back to back, is the lines."""

    pieces: pa.Array
    per_record: int

    def __len__(self) -> int:
        return len(self.pieces) // self.per_record

    def data(self) -> memoryview:
        """The UTF-8 bytes of the chunk's lines (no copy): what a file receives."""
        offsets = np.frombuffer(self.pieces.buffers()[1], dtype=np.int32, count=len(self.pieces) + 1, offset=4 * self.pieces.offset)
        values = self.pieces.buffers()[2]
        return memoryview(b"") if values is None else memoryview(values)[int(offsets[0]) : int(offsets[-1])]

    def head(self, count: int) -> Chunk:
        """The first ``count`` records."""
        return Chunk(self.pieces.slice(0, count * self.per_record), self.per_record)

    def lines(self) -> list[str]:
        return bytes(self.data()).decode("utf-8").split("\n")[:-1]


def render_rows(table: PieceTable, columns: Sequence[Column], count: int) -> Chunk:
    """``count`` records whose pieces are ``columns`` left to right (adjacent constant texts merged)."""
    merged: list[int | np.ndarray] = []
    pending = ""
    for column in columns:
        if isinstance(column, str):
            pending += column
            continue
        if pending:
            merged.append(table.constant(pending))
            pending = ""
        merged.append(column)
    if pending:
        merged.append(table.constant(pending))
    index = np.empty((count, len(merged)), dtype=np.int32)  # [N, P] piece ids
    for j, column in enumerate(merged):
        index[:, j] = column
    return Chunk(table.array().take(pa.array(index.reshape(-1))), len(merged))


class JSONLines:
    """Records rendered lazily as JSON Lines, chunk by chunk.

    ``chunks()`` yields :class:`Chunk` objects, what the writers stream to disk; iterating
    yields the records decoded as dicts, for inspection and tests. ``num_records`` is known
    before anything is rendered.
    """

    def __init__(self, render: Callable[[], Iterator[Chunk]], num_records: int):
        self._render = render
        self.num_records = num_records

    def __len__(self) -> int:
        return self.num_records

    def chunks(self) -> Iterator[Chunk]:
        return self._render()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for chunk in self.chunks():
            for line in chunk.lines():
                yield json.loads(line)
