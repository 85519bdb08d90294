"""Property: any bytes given to the TSV reader either parse into a valid KG or raise KGFormatError.

Inputs mix raw random bytes with near-valid TSV (tabs, CR/LF, spaces, NUL, BOMs, non-ASCII,
spliced invalid bytes), so both outcomes are exercised; whatever parses must index into a KG
whose ids are in range and build a graph, and nothing may raise another exception type.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rq_kg_pipeline.kg.graph import build_graph
from rq_kg_pipeline.kg.indexing import SPLITS, index_kg
from rq_kg_pipeline.kg.tsv import MAX_LINE_CHARS, KGFormatError, read_names, read_triples

_WORD = st.text(alphabet=st.sampled_from(list("ab_é東/.")), min_size=1, max_size=4)
CLEAN = st.one_of(_WORD, st.tuples(_WORD, _WORD).map(lambda t: f"{t[0]}\x1c{t[1]}"))  # inner control chars are fine
NOISY = st.text(alphabet=st.sampled_from(list("ab_é ") + ["\t", "\r", "\x00", "\x0b", "\u2028"]), max_size=6)


def lines(width: int) -> st.SearchStrategy[str]:
    """A record of ``width`` clean fields (often), or blank / noisy lines and wrong field counts."""
    record = st.lists(CLEAN, min_size=width, max_size=width).map("\t".join)
    wrong = st.lists(st.one_of(CLEAN, NOISY), min_size=0, max_size=width + 1).map("\t".join)
    return st.one_of(record, record, record, record, st.sampled_from(["", "  "]), wrong)


def text(width: int) -> st.SearchStrategy[bytes]:
    return st.tuples(
        st.lists(lines(width), min_size=0, max_size=8),
        st.sampled_from(["\n", "\n", "\r\n", "\r"]),
        st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xff\xfe"]),
    ).map(lambda t: t[2] + t[1].join(t[0]).encode("utf-8"))


def content(width: int) -> st.SearchStrategy[bytes]:
    """Valid TSV, random bytes, near-valid TSV, or near-valid TSV with a few random bytes spliced in."""
    valid = st.lists(st.lists(CLEAN, min_size=width, max_size=width).map("\t".join), min_size=1, max_size=6).map(
        lambda rows: "\n".join(rows).encode("utf-8")
    )
    spliced = st.tuples(text(width), st.binary(min_size=1, max_size=3), st.integers(0, 200)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    )
    return st.one_of(valid, valid, valid, st.binary(max_size=200), text(width), text(width), spliced)


def check_table(frame, columns: tuple[str, ...]) -> None:
    assert list(frame.columns) == [*columns, "line"] and len(frame) > 0
    for column in columns:
        for value in frame[column]:
            assert isinstance(value, str) and value.strip() and "\t" not in value and "\n" not in value
            assert "\r" not in value and "\x00" not in value and len(value) <= MAX_LINE_CHARS
            if column != "name":
                assert value == value.strip()
    assert frame["line"].is_monotonic_increasing and frame["line"].min() >= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(train=content(3), valid=content(3), test=content(3))
def test_random_bytes_parse_into_a_valid_kg_or_raise_kg_format_error(train: bytes, valid: bytes, test: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for split, data in zip(SPLITS, (train, valid, test)):
            (folder / f"{split}.txt").write_bytes(data)
        try:
            raw = {split: read_triples(folder / f"{split}.txt") for split in SPLITS}
        except KGFormatError as error:
            assert error.path.startswith(tmp) and (error.line is None or error.line >= 1)
            event(f"refused: {error.problem.split(' ')[0]}")
            return
    event("parsed")
    for frame in raw.values():
        check_table(frame, ("head", "relation", "tail"))
    indexed = index_kg(raw, unseen_policy="keep")
    for split, ids in indexed.splits.items():
        assert ids.shape == (len(raw[split].drop_duplicates(["head", "relation", "tail"])), 3)
        assert ids[:, [0, 2]].max() < indexed.num_entities and ids[:, 1].max() < indexed.num_relations
        assert ids.min() >= 0
    graph = build_graph(torch.from_numpy(indexed.splits["train"]), indexed.num_entities, indexed.num_relations)
    assert graph.num_edges == 2 * len(indexed.splits["train"])


@settings(max_examples=100, deadline=None)
@given(data=content(2))
def test_random_bytes_parse_into_names_or_raise_kg_format_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "entity2text.txt"
        path.write_bytes(data)
        try:
            frame = read_names(path)
        except KGFormatError as error:
            assert error.path == str(path)
            event(f"refused: {error.problem.split(' ')[0]}")
            return
    event("parsed")
    check_table(frame, ("id", "name"))
