"""The bad-input corpus (tests/data/bad/): every malformed KG or names file gets exactly the error
(type, file, line, problem) or the accepting behaviour that docs/bad_inputs.md promises.

Most cases run the ingestion steps as plain library calls (the reader, then the ingestion node
functions); a few run ``kedro run --pipelines=ingestion`` on the case folder. Three cases are
written at test time instead of committed: a 10 MB single line and two UTF-16 files; so is every
names file (entity2text.txt, here or as a directory: a committed one reads like copied benchmark
data), beside the case's committed triples.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rq_kg_pipeline.kg.indexing import SPLITS
from rq_kg_pipeline.kg.tsv import MAX_LINE_CHARS, NAME_COLUMNS, KGFormatError, read_names, read_triples
from rq_kg_pipeline.params import IngestionParams
from rq_kg_pipeline.pipelines.ingestion.nodes import build_training_graph, index_triples
from tests.conftest import PROJECT_ROOT
from tests.pipelines.project import ScratchProject

CORPUS = PROJECT_ROOT / "tests" / "data" / "bad"
DOC = PROJECT_ROOT / "docs" / "bad_inputs.md"
TRIPLES = "expected 3 tab-separated fields (head, relation, tail), found"
NAMES = "expected 2 tab-separated fields (id, name), found"
NO_RECORDS = "no records (the file is empty or has only blank lines)"
UNSEEN = "does not occur in the training split (1 such triples in this file); set ingestion.unseen_policy to 'drop' or 'keep' to accept them"
TEN_MB = 10 * 2**20

# case -> (file, line or None, exact problem) of the KGFormatError it must raise
REFUSED: dict[str, tuple[str, int | None, str]] = {
    "wrong_field_count_two": ("train.txt", 3, f"{TRIPLES} 2"),
    "wrong_field_count_four": ("valid.txt", 1, f"{TRIPLES} 4"),
    "empty_field": ("test.txt", 1, "empty relation field"),
    "tabs_only_line": ("train.txt", 3, "empty head field"),
    "spaces_around_id": ("train.txt", 4, "head field 'dave ' has leading or trailing whitespace"),
    "undecodable_byte": ("train.txt", 3, "byte 0xe9 is not valid UTF-8"),
    "utf16_file": ("train.txt", 1, "the file is UTF-16 (little-endian) (byte-order mark); save it as UTF-8"),
    "utf16_without_bom": (
        "train.txt", 1, "NUL byte (0x00) in the text (a UTF-16 file without byte-order mark, or a binary file?)"
    ),
    "nul_byte": ("train.txt", 2, "NUL byte (0x00) in the text"),
    "ten_mb_single_line": (
        "train.txt", 1,
        f"line of {TEN_MB + 12:,} characters; at most {MAX_LINE_CHARS:,} are accepted (missing line breaks?)",
    ),
    "carriage_return_line_ends": (
        "train.txt", 1, "carriage return inside a line (old Mac line ends?); use LF or CRLF line ends"
    ),
    "missing_split": ("test.txt", None, "file not found"),
    "empty_split": ("valid.txt", None, NO_RECORDS),
    "blank_lines_only_split": ("test.txt", None, NO_RECORDS),
    "unknown_valid_entity": ("valid.txt", 2, f"entity 'zed' {UNSEEN}"),
    "unknown_test_relation": ("test.txt", 1, f"relation 'hates' {UNSEEN}"),
    "names_missing_column": ("entity2text.txt", 2, f"{NAMES} 1"),
    "names_extra_column": ("entity2text.txt", 3, f"{NAMES} 3"),
    "names_duplicate_id": ("entity2text.txt", 5, "id 'alice' already named on line 1"),
    "names_empty_name": ("entity2text.txt", 4, "empty name field"),
    "directory_instead_of_file": ("train.txt", None, "is a directory, expected a file"),
    "names_file_is_a_directory": ("entity2text.txt", None, "is a directory, expected a file"),
}  # fmt: skip
ACCEPTED = ("accepted_bom_crlf_blank_lines", "duplicated_triples", "self_loops", "relation_labels_like_inverse_ids")
GENERATED = ("utf16_file", "utf16_without_bom", "ten_mb_single_line")
NAMES_TEXT = "alice\tAlice Liddell\nbob\tBob\ncarol\tCarol\ndave\tDave\n"
WRITTEN_NAMES: dict[str, str | None] = {  # case -> its entity2text.txt (None: a directory of that name)
    "accepted_bom_crlf_blank_lines": NAMES_TEXT,
    "names_duplicate_id": NAMES_TEXT + "alice\tAlicia\n",  # line 5
    "names_empty_name": NAMES_TEXT.replace("dave\tDave", "dave\t "),  # line 4: a name of one space
    "names_missing_column": NAMES_TEXT.replace("bob\tBob", "bob"),  # line 2
    "names_extra_column": NAMES_TEXT.replace("carol\tCarol", "carol\tCarol\tsmith"),  # line 3
    "names_file_is_a_directory": None,
}


def case_dir(name: str, tmp_path: Path) -> Path:
    """The committed folder of ``name``, or one written now under tmp_path: a GENERATED case, or a
    committed one with its names file from WRITTEN_NAMES."""
    if name not in GENERATED and name not in WRITTEN_NAMES:
        return CORPUS / name
    folder = tmp_path / name
    shutil.copytree(CORPUS / (name if name in WRITTEN_NAMES else "accepted_bom_crlf_blank_lines"), folder)
    if name in WRITTEN_NAMES:
        names, text = folder / "entity2text.txt", WRITTEN_NAMES[name]
        if text is None:
            names.mkdir()
        else:
            names.write_text(text, encoding="utf-8")
        return folder
    train = "alice\tknows\tbob\nbob\tknows\tcarol\ncarol\tlikes\talice\ndave\tlikes\tbob\n"
    if name == "utf16_file":
        data = train.encode("utf-16")  # with its byte-order mark
    elif name == "utf16_without_bom":
        data = train.encode("utf-16-le")
    else:
        data = ("alice\tknows\t" + "b" * TEN_MB).encode()  # one line, no line break
    (folder / "train.txt").write_bytes(data)
    return folder


def ingest(folder: Path, unseen_policy: str = "error") -> dict:
    """The ingestion pipeline as library calls: read (strict TSV), index, select names, build the graph."""
    raw = {split: read_triples(folder / f"{split}.txt") for split in SPLITS}
    names_path = folder / "entity2text.txt"
    if names_path.exists():
        names = read_names(names_path)
    else:  # optional, as in the catalog
        names = pd.DataFrame({c: pd.Series(dtype=object) for c in NAME_COLUMNS}).assign(line=pd.Series(dtype="int64"))
    outputs = index_triples(raw["train"], raw["valid"], raw["test"], names, IngestionParams(unseen_policy=unseen_policy))
    entities, relations, train, valid, test, named, counts = outputs
    graph = build_training_graph(train, entities, relations)
    return {"entities": entities, "relations": relations, "train": train, "valid": valid, "test": test,
            "names": named, "counts": counts, "graph": graph}  # fmt: skip


def test_corpus_is_large_and_every_case_is_tested_and_documented() -> None:
    committed = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    cases = set(REFUSED) | set(ACCEPTED)
    assert len(cases) >= 15
    assert committed == cases - set(GENERATED), "every corpus folder has an expected outcome, and vice versa"
    rows = re.findall(r"^\| `([a-z0-9_]+)`( \(generated\))? \|", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert {name for name, _ in rows} == cases
    assert {name for name, generated in rows if generated} == set(GENERATED)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_input_raises_kg_format_error_naming_file_and_line(name, tmp_path) -> None:
    folder = case_dir(name, tmp_path)
    file, line, problem = REFUSED[name]
    with pytest.raises(KGFormatError) as info:
        ingest(folder)
    assert type(info.value) is KGFormatError
    assert (Path(info.value.path).name, info.value.line, info.value.problem) == (file, line, problem)
    where = f"{folder / file}:{line}" if line is not None else str(folder / file)
    assert str(info.value) == f"{where}: {problem}"


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path) -> None:
    out = ingest(case_dir("accepted_bom_crlf_blank_lines", tmp_path))
    assert out["entities"]["label"].tolist() == ["alice", "bob", "carol", "dave"]
    assert len(out["train"]) == 4 and out["names"]["name"].tolist()[0] == "Alice Liddell"


def test_duplicated_triples_are_removed_and_counted() -> None:
    out = ingest(CORPUS / "duplicated_triples")
    assert (out["counts"]["train_duplicates"], out["counts"]["test_duplicates"]) == (2, 1)
    assert len(out["train"]) == 4 and len(out["test"]) == 1
    assert not out["train"].duplicated().any()


def test_self_loops_are_kept_and_counted() -> None:
    out = ingest(CORPUS / "self_loops")
    assert out["counts"]["train_self_loops"] == 1 and len(out["train"]) == 5
    alice = int(out["entities"].set_index("label").loc["alice", "id"])
    graph = out["graph"]
    loops = (graph.src == alice) & (graph.dst == alice)
    assert int(loops.sum()) == 2  # the triple and its inverse edge
    forward, inverse = sorted(graph.rel[loops].tolist())
    assert inverse == forward + graph.num_relations


def test_relation_labels_cannot_collide_with_inverse_ids() -> None:
    out = ingest(CORPUS / "relation_labels_like_inverse_ids")
    labels = out["relations"]["label"].tolist()
    assert labels == ["1", "inverse of knows", "knows", "knows_reverse", "likes"]  # own ids 0..4
    graph = out["graph"]
    assert graph.num_relations == 5
    assert set(graph.rel.tolist()) == set(range(10))  # 5 relations, 5 inverses r + 5
    forward = graph.rel < 5
    assert int(forward.sum()) == len(out["train"]) == int((~forward).sum())


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    return ScratchProject.create(root)


def test_kedro_ingestion_refuses_bad_input_before_writing_anything(project, tmp_path) -> None:
    # (the reader's errors through `kedro run` are covered in tests/pipelines/test_ingestion.py)
    name = "names_duplicate_id"
    folder = case_dir(name, tmp_path)
    file, line, problem = REFUSED[name]
    done = project.run("--pipelines=ingestion", env={"RQKG_KG_DIR": str(folder), "RQKG_KG_NAME": name})
    assert done.returncode != 0
    assert f"{folder / file}:{line}: {problem}" in done.stderr
    assert project.output_files() == []


def test_kedro_ingestion_counts_duplicates_and_self_loops(project, tmp_path) -> None:
    folder = tmp_path / "both"
    shutil.copytree(CORPUS / "duplicated_triples", folder)
    with open(folder / "train.txt", "a", encoding="utf-8") as handle:
        handle.write("alice\tknows\talice\n")
    done = project.run("--pipelines=ingestion", env={"RQKG_KG_DIR": str(folder), "RQKG_KG_NAME": "both"})
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((project.path / "data/08_reporting/both/kg_statistics.json").read_text())
    assert (stats["train_duplicates"], stats["test_duplicates"], stats["train_self_loops"]) == (2, 1, 1)
    assert stats["num_train_triples"] == 5 and stats["num_entities"] == 4
