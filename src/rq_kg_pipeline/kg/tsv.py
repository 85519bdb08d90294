"""Strict reading of tab-separated KG files: triples (head, relation, tail) and names (id, name).

Accepted: UTF-8 with or without a BOM, LF or CRLF line ends, blank lines anywhere (skipped).
Everything else (a wrong number of fields, an empty field, an undecodable byte, a file with
no records) raises :class:`KGFormatError` naming the file and the 1-based line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

TRIPLE_COLUMNS = ("head", "relation", "tail")
NAME_COLUMNS = ("id", "name")


class KGFormatError(ValueError):
    """Bad KG input; the message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


def _decode(path: Path, data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise KGFormatError(path, line, f"byte 0x{data[exc.start]:02x} is not valid UTF-8") from None


def read_tsv_table(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a TSV file whose records have exactly ``len(columns)`` non-empty fields.

    Returns a DataFrame with ``columns`` (str) plus ``line`` (int, 1-based line in the file),
    so later checks can still say where a record came from. ``df.attrs["source"]`` is the path.
    """
    path = Path(path)
    if not path.is_file():
        raise KGFormatError(path, None, "file not found")
    text = _decode(path, path.read_bytes())
    width = len(columns)
    records: list[list[str]] = []
    lines: list[int] = []
    # split("\n") rather than splitlines(): names may legitimately contain \x0b, \x1c, U+2028...
    for number, raw in enumerate(text.split("\n"), start=1):
        row = raw[:-1] if raw.endswith("\r") else raw
        if not row.strip():
            continue
        fields = row.split("\t")
        if len(fields) != width:
            raise KGFormatError(
                path, number, f"expected {width} tab-separated fields ({', '.join(columns)}), found {len(fields)}"
            )
        for name, value in zip(columns, fields):
            if not value.strip():
                raise KGFormatError(path, number, f"empty {name} field")
        records.append(fields)
        lines.append(number)
    if not records:
        raise KGFormatError(path, None, "no records (the file is empty or has only blank lines)")
    frame = pd.DataFrame(records, columns=list(columns), dtype=object)
    frame["line"] = lines
    frame.attrs["source"] = str(path)
    return frame


def read_triples(path: str | Path) -> pd.DataFrame:
    """Triples file ``head<TAB>relation<TAB>tail`` -> DataFrame[head, relation, tail, line]."""
    return read_tsv_table(path, TRIPLE_COLUMNS)


def read_names(path: str | Path) -> pd.DataFrame:
    """Names file ``id<TAB>name`` -> DataFrame[id, name, line]."""
    return read_tsv_table(path, NAME_COLUMNS)
