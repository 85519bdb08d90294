"""Strict reading of tab-separated KG files: triples (head, relation, tail) and names (id, name).

Accepted: UTF-8 with or without a BOM, LF or CRLF line ends, blank lines anywhere (empty or
spaces only: skipped). Everything else raises :class:`KGFormatError` naming the file and, where
there is one, the 1-based line: a wrong number of fields (a line of tabs only counts as empty
fields), an empty field, an id field (head, relation, tail, names' id) with leading or trailing
whitespace, a NUL byte, a carriage return inside a line, a line longer than
:data:`MAX_LINE_CHARS`, an undecodable byte, a UTF-16/UTF-32 file, a file with no records, a
missing file, or a directory where the file should be.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

TRIPLE_COLUMNS = ("head", "relation", "tail")
NAME_COLUMNS = ("id", "name")
FREE_TEXT_COLUMNS = frozenset({"name"})  # may carry surrounding spaces; every other field is an identifier
MAX_LINE_CHARS = 1 << 16  # FB15k-237's longest line has 167 characters

_UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)


class KGFormatError(ValueError):
    """Bad KG input; the message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text of ``data`` without its BOM; wide encodings and bad bytes name their line."""
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            raise KGFormatError(path, 1, f"the file is {encoding} (byte-order mark); save it as UTF-8")
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    nul = data.find(b"\x00")
    if nul >= 0:
        hint = " (a UTF-16 file without byte-order mark, or a binary file?)" if data[1::2].count(0) > len(data) // 8 else ""
        raise KGFormatError(path, data.count(b"\n", 0, nul) + 1, f"NUL byte (0x00) in the text{hint}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise KGFormatError(path, line, f"byte 0x{data[exc.start]:02x} is not valid UTF-8") from None


def _check_line(path: Path, number: int, row: str) -> None:
    if len(row) > MAX_LINE_CHARS:
        raise KGFormatError(
            path, number, f"line of {len(row):,} characters; at most {MAX_LINE_CHARS:,} are accepted (missing line breaks?)"
        )
    if "\r" in row:
        raise KGFormatError(path, number, "carriage return inside a line (old Mac line ends?); use LF or CRLF line ends")


def read_tsv_table(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a TSV file whose records have exactly ``len(columns)`` non-empty fields.

    Returns a DataFrame with ``columns`` (str) plus ``line`` (int, 1-based line in the file),
    so later checks can still say where a record came from. ``df.attrs["source"]`` is the path.
    """
    path = Path(path)
    if path.is_dir():
        raise KGFormatError(path, None, "is a directory, expected a file")
    if not path.is_file():
        raise KGFormatError(path, None, "file not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KGFormatError(path, None, f"cannot be read: {err.strerror or err}") from None
    text = _decode(path, data)
    width = len(columns)
    records: list[list[str]] = []
    lines: list[int] = []
    # split("\n") rather than splitlines(): names may legitimately contain \x0b, \x1c, U+2028...
    for number, raw in enumerate(text.split("\n"), start=1):
        row = raw[:-1] if raw.endswith("\r") else raw
        if "\t" not in row and not row.strip():
            continue
        _check_line(path, number, row)
        fields = row.split("\t")
        if len(fields) != width:
            raise KGFormatError(
                path, number, f"expected {width} tab-separated fields ({', '.join(columns)}), found {len(fields)}"
            )
        for name, value in zip(columns, fields):
            if not value.strip():
                raise KGFormatError(path, number, f"empty {name} field")
            if name not in FREE_TEXT_COLUMNS and value != value.strip():
                raise KGFormatError(path, number, f"{name} field {value!r} has leading or trailing whitespace")
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
