"""Vocabularies, id mapping, the unseen-entity policy, duplicates and names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rq_kg_pipeline.kg.indexing import index_kg
from rq_kg_pipeline.kg.names import select_names
from rq_kg_pipeline.kg.tsv import KGFormatError, read_names, read_triples
from tests.conftest import umls_dir


def frame(rows, source="split.txt"):
    data = pd.DataFrame(rows, columns=["head", "relation", "tail"])
    data["line"] = np.arange(1, len(rows) + 1)
    data.attrs["source"] = source
    return data


def raw_umls():
    return {s: read_triples(umls_dir() / f"{s}.txt") for s in ("train", "valid", "test")}


def test_vocabulary_is_deterministic_and_order_independent():
    raw = raw_umls()
    first = index_kg(raw)
    shuffled = {s: f.sample(frac=1.0, random_state=7) for s, f in raw.items()}
    for split, f in shuffled.items():
        f.attrs["source"] = raw[split].attrs["source"]
    second = index_kg(shuffled)
    assert first.entities.equals(second.entities)
    assert first.relations.equals(second.relations)
    assert (first.num_entities, first.num_relations) == (135, 46)
    assert first.entities["label"].is_monotonic_increasing
    # same triples, same ids (row order follows the input)
    assert sorted(map(tuple, first.splits["train"])) == sorted(map(tuple, second.splits["train"]))


def test_ids_map_back_to_the_labels():
    raw = raw_umls()
    indexed = index_kg(raw)
    ids = indexed.splits["test"]
    labels = indexed.entities["label"].to_numpy()
    rels = indexed.relations["label"].to_numpy()
    back = np.stack([labels[ids[:, 0]], rels[ids[:, 1]], labels[ids[:, 2]]], axis=1)
    assert back.tolist() == raw["test"][["head", "relation", "tail"]].values.tolist()


def test_unseen_entity_policies():
    train = frame([["a", "r", "b"], ["b", "r", "c"]], "train.txt")
    valid = frame([["a", "r", "c"], ["a", "r", "z"], ["z", "r", "a"]], "valid.txt")
    test = frame([["c", "s", "a"], ["a", "r", "b"]], "test.txt")
    raw = {"train": train, "valid": valid, "test": test}
    with pytest.raises(KGFormatError) as info:
        index_kg(raw, "error")
    assert str(info.value) == (
        "valid.txt:2: entity 'z' does not occur in the training split (2 such triples in this file); "
        "set ingestion.unseen_policy to 'drop' or 'keep' to accept them"
    )
    dropped = index_kg(raw, "drop")
    assert dropped.counts["valid_unseen"] == 2 and dropped.counts["test_unseen"] == 1
    assert len(dropped.splits["valid"]) == 1 and len(dropped.splits["test"]) == 1
    assert dropped.num_entities == 3 and dropped.num_relations == 1
    kept = index_kg(raw, "keep")
    assert kept.entities["label"].tolist() == ["a", "b", "c", "z"]
    assert kept.relations["label"].tolist() == ["r", "s"]
    assert len(kept.splits["valid"]) == 3


def test_unseen_relation_is_reported_as_a_relation():
    raw = {
        "train": frame([["a", "r", "b"]], "train.txt"),
        "valid": frame([["a", "r", "b"]], "valid.txt"),
        "test": frame([["a", "q", "b"]], "test.txt"),
    }
    with pytest.raises(KGFormatError, match=r"test\.txt:1: relation 'q' does not occur in the training split"):
        index_kg(raw)


def test_split_emptied_by_drop_is_an_error():
    raw = {
        "train": frame([["a", "r", "b"]], "train.txt"),
        "valid": frame([["a", "r", "x"]], "valid.txt"),
        "test": frame([["a", "r", "b"]], "test.txt"),
    }
    with pytest.raises(KGFormatError, match=r"valid\.txt: the valid split has no triples left"):
        index_kg(raw, "drop")


def test_duplicates_are_counted_and_removed():
    raw = {
        "train": frame([["a", "r", "b"], ["a", "r", "b"], ["b", "r", "a"]], "train.txt"),
        "valid": frame([["a", "r", "b"]], "valid.txt"),
        "test": frame([["b", "r", "a"], ["b", "r", "a"], ["b", "r", "a"]], "test.txt"),
    }
    indexed = index_kg(raw)
    assert indexed.counts["train_duplicates"] == 1 and indexed.counts["test_duplicates"] == 2
    assert len(indexed.splits["train"]) == 2 and len(indexed.splits["test"]) == 1


def test_fb15k237_sizes(fb15k237_dir):
    raw = {s: read_triples(fb15k237_dir / f"{s}.txt") for s in ("train", "valid", "test")}
    with pytest.raises(KGFormatError, match=r"valid\.txt:\d+: entity '/m/"):
        index_kg(raw, "error")
    indexed = index_kg(raw, "keep")
    assert (indexed.num_entities, indexed.num_relations) == (14541, 237)
    assert [len(indexed.splits[s]) for s in ("train", "valid", "test")] == [272115, 17535, 20466]
    all_names = read_names(fb15k237_dir / "entity2text.txt")
    names, counts = select_names(all_names, indexed.entities)
    assert len(names) == 14541 and counts["entities_without_name"] == 0
    assert counts["names_unused"] == len(all_names) - 14541 > 0


def test_repeated_name_id_names_both_lines(tmp_path):
    path = tmp_path / "entity2text.txt"
    path.write_text("a\tAlpha\nb\tBeta\na\tAgain\n", encoding="utf-8")
    entities = pd.DataFrame({"id": [0, 1], "label": ["a", "b"]})
    with pytest.raises(KGFormatError, match=r"entity2text\.txt:3: id 'a' already named on line 1"):
        select_names(read_names(path), entities)
