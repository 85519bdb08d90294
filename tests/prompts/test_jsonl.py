"""JSONL writing: exact round trip of hostile strings, one record per line, streaming, atomic replacement,
records rendered column-wise, direct I/O."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rq_kg_pipeline.prompts.columns import JSONLines, PieceTable, json_escaped, render_rows
from rq_kg_pipeline.prompts.direct_write import DirectWriter, open_sequential
from rq_kg_pipeline.prompts.jsonl import read_jsonl, to_json_line, write_jsonl

HOSTILE = [
    'quote " and \'',
    "tab\tnew\nline\r",
    "back\\slash",
    "non-ASCII: é 東京 😀",
    "seps \u2028 \u2029 \x85 \x0b \x1c",
]


def test_round_trip_is_exact_and_line_safe(tmp_path: Path) -> None:
    records = [{"prompt": text, "names": {"head": text}, "id": i} for i, text in enumerate(HOSTILE)]
    path = tmp_path / "out.jsonl"
    assert write_jsonl(records, path) == len(records)
    raw = path.read_text(encoding="utf-8")
    assert raw.endswith("\n") and len(raw.splitlines()) == len(records)  # even str.splitlines sees one per record
    assert "東京" in raw and "😀" in raw  # ensure_ascii=False keeps text readable
    assert list(read_jsonl(path)) == records
    assert [json.loads(line) for line in raw.splitlines()] == records
    assert "\n" not in to_json_line({"x": "\u2028"})


def test_max_examples_streams(tmp_path: Path) -> None:
    consumed = []

    def endless() -> Iterator[dict]:
        for i in itertools.count():
            consumed.append(i)
            yield {"i": i}

    path = tmp_path / "few.jsonl"
    assert write_jsonl(endless(), path, max_examples=5) == 5
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2, 3, 4]
    assert len(consumed) == 5  # nothing beyond the limit was generated
    with pytest.raises(ValueError, match="max_examples"):
        write_jsonl([], path, max_examples=-1)


def test_failure_leaves_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.jsonl"

    def failing() -> Iterator[dict]:
        yield {"ok": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_jsonl(failing(), path)
    assert not path.exists()
    assert write_jsonl([{"v": 1}], path) == 1
    with pytest.raises(RuntimeError, match="boom"):
        write_jsonl(failing(), path)
    assert list(read_jsonl(path)) == [{"v": 1}]  # the previous file is intact
    assert [p.name for p in path.parent.iterdir()] == ["data.jsonl"]  # no temp files left


def _rendered(texts: list[str], chunk_size: int) -> JSONLines:
    """Records {"text": t, "i": i} rendered column-wise, ``chunk_size`` per chunk."""
    table = PieceTable()
    text = table.section([json_escaped(t) for t in texts])
    number = table.section([str(i) for i in range(len(texts))])

    def render():  # noqa: ANN202
        for start in range(0, len(texts), chunk_size):
            ids = np.arange(start, min(start + chunk_size, len(texts)))
            yield render_rows(table, ['{"text":"', text + ids, '","i":', number + ids, "}\n"], len(ids))

    return JSONLines(render, len(texts))


def test_rendered_records_round_trip_and_cap(tmp_path: Path) -> None:
    texts = HOSTILE * 7  # 35 records over chunks of 4
    lines = _rendered(texts, chunk_size=4)
    assert list(lines) == [{"text": t, "i": i} for i, t in enumerate(texts)]
    path = tmp_path / "rendered.jsonl"
    assert write_jsonl(lines, path) == len(texts)
    raw = path.read_text(encoding="utf-8")
    assert len(raw.splitlines()) == len(texts) and raw.endswith("}\n")
    assert list(read_jsonl(path)) == list(lines)
    assert write_jsonl(lines, path, max_examples=10) == 10  # cut inside the third chunk
    assert [r["i"] for r in read_jsonl(path)] == list(range(10))
    assert [p.name for p in tmp_path.iterdir()] == ["rendered.jsonl"]


@pytest.mark.parametrize(("buffer_size", "direct"), [(4096, True), (3 * 4096, True), (4096, False)])
def test_direct_writer_writes_exact_bytes(tmp_path: Path, buffer_size: int, direct: bool, monkeypatch) -> None:  # noqa: ANN001
    if not direct:  # an OS without O_DIRECT gets an ordinary buffered file
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    elif not hasattr(os, "O_DIRECT"):
        pytest.skip("this OS has no O_DIRECT")
    with open_sequential(tmp_path / "probe.bin", buffer_size=buffer_size) as probe:
        if direct and not isinstance(probe, DirectWriter):
            pytest.skip("the temporary folder's filesystem refuses O_DIRECT")
        assert isinstance(probe, DirectWriter) == direct
    data = bytes(range(256)) * 97 + b"tail"  # 24,836 bytes: several buffers, then a partial block
    path = tmp_path / "direct.bin"
    with open_sequential(path, buffer_size=buffer_size) as handle:
        for start in range(0, len(data), 5000):
            handle.write(memoryview(data)[start:start + 5000])
    assert path.read_bytes() == data
    with open_sequential(path, buffer_size=buffer_size) as handle:  # reopening truncates
        handle.write(b"short")
    assert path.read_bytes() == b"short"
    with pytest.raises(ValueError, match="buffer_size"):
        DirectWriter(-1, buffer_size=100)
