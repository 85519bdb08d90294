"""JSONL writing: exact round trip of hostile strings, one record per line, streaming, atomic replacement."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

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
