"""Strict TSV reading: what is accepted, and the exact error (file and line) for what is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from rq_kg_pipeline.kg.tsv import KGFormatError, read_names, read_triples


def write(tmp_path: Path, data: bytes, name: str = "train.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfa\tr\tb\r\n\r\nb\tr\tc\r\n\n\n")
    frame = read_triples(path)
    assert frame[["head", "relation", "tail"]].values.tolist() == [["a", "r", "b"], ["b", "r", "c"]]
    assert frame["line"].tolist() == [1, 3]
    assert frame.attrs["source"] == str(path)


def test_fb15k237_is_read_with_crlf_line_ends(fb15k237_dir):
    frame = read_triples(fb15k237_dir / "valid.txt")
    assert len(frame) == 17535
    assert not frame["tail"].str.endswith("\r").any()


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (b"a\tr\tb\na\tr\n", 2, "expected 3 tab-separated fields (head, relation, tail), found 2"),
        (b"a\tr\tb\tc\n", 1, "expected 3 tab-separated fields (head, relation, tail), found 4"),
        (b"a\tr\tb\n\na r b\n", 3, "expected 3 tab-separated fields (head, relation, tail), found 1"),
        (b"a\t\tb\n", 1, "empty relation field"),
        (b"a\tr\t \n", 1, "empty tail field"),
        (b"a\tr\tb\nx\ty\t\xff\n", 2, "byte 0xff is not valid UTF-8"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, data, line, problem):
    path = write(tmp_path, data)
    with pytest.raises(KGFormatError) as info:
        read_triples(path)
    assert str(info.value) == f"{path}:{line}: {problem}"
    assert info.value.line == line


@pytest.mark.parametrize("data", [b"", b"\n\r\n  \n", b"\xef\xbb\xbf"])
def test_empty_file_is_an_error(tmp_path, data):
    path = write(tmp_path, data)
    with pytest.raises(KGFormatError, match=r"train\.txt: no records"):
        read_triples(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(KGFormatError, match="file not found"):
        read_triples(tmp_path / "nope.txt")


def test_names_keep_quotes_and_unicode_and_reject_bad_lines(tmp_path):
    path = write(tmp_path, 'm1\tO\'Brien "the" Café\nm2\t東京\n'.encode(), "entity2text.txt")
    assert read_names(path)["name"].tolist() == ['O\'Brien "the" Café', "東京"]
    bad = write(tmp_path, b"m1\tone\nm2\n", "bad_names.txt")
    with pytest.raises(KGFormatError, match=r"bad_names\.txt:2: expected 2 tab-separated fields \(id, name\), found 1"):
        read_names(bad)
