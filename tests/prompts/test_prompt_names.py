"""Readable names: Freebase relation paths, UMLS labels, names-file lookup with fallbacks, prompt cleaning."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rq_kg_pipeline.kg.tsv import read_triples
from rq_kg_pipeline.prompts.names import (
    entity_display_names,
    prompt_text,
    relation_display_name,
    relation_display_names,
)


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("/film/film/genre", "film genre"),
        ("/people/person/spouse_s./people/marriage/spouse", "person spouse / marriage spouse"),
        ("/location/location/contains", "location contains"),
        ("/base/popstra/celebrity/friendship./base/popstra/friendship/participant",
         "celebrity friendship / friendship participant"),
        ("interacts_with", "interacts with"),
        ("_hypernym", "hypernym"),
    ],
)
def test_relation_display_name(label: str, name: str) -> None:
    assert relation_display_name(label) == name
    assert relation_display_name(label, inverse=True) == f"inverse of {name}"


def test_every_fb15k237_relation_gets_a_readable_name(fb15k237_dir: Path) -> None:
    labels = sorted(set(read_triples(fb15k237_dir / "train.txt")["relation"]))
    assert len(labels) == 237
    names = relation_display_names(labels)
    assert len(names) == 2 * 237 and names[237] == f"inverse of {names[0]}"
    for name in names[:237]:
        assert name and "_" not in name and "." not in name
        assert "/" not in name.replace(" / ", "")
    assert len(set(names[:237])) > 230  # nearly all stay distinct


def test_umls_entities_fall_back_to_readable_labels(umls) -> None:  # noqa: ANN001
    vocab = pd.DataFrame({"id": range(umls.num_entities), "label": umls.entity_labels})
    names, fallbacks = entity_display_names(vocab, pd.DataFrame(columns=["id", "name"]))
    assert fallbacks == umls.num_entities
    assert "acquired abnormality" in names
    assert names[umls.entity_labels.index("acquired_abnormality")] == "acquired abnormality"


def test_names_file_used_where_present(fb15k237_dir: Path) -> None:
    text = pd.read_csv(fb15k237_dir / "entity2text.txt", sep="\t", header=None, names=["id", "name"],
                       quoting=3, nrows=50, dtype=str)
    labels = sorted(text["id"].tolist()[:20]) + ["/m/0zzzz_unnamed"]
    vocab = pd.DataFrame({"id": range(len(labels)), "label": labels})
    table = pd.concat([text, pd.DataFrame({"id": ["/m/0blank"], "name": ["  "]})], ignore_index=True)
    names, fallbacks = entity_display_names(vocab, table)
    lookup = dict(zip(text["id"], text["name"]))
    assert names[:20] == [lookup[label] for label in labels[:20]]
    assert names[20] == "/m/0zzzz_unnamed" and fallbacks == 1  # Freebase ids stay as they are


def test_names_are_kept_verbatim_and_cleaned_only_for_prompts() -> None:
    raw = 'Say "hi"\tthen\nleave \\ café 東京\u2028end'
    vocab = pd.DataFrame({"id": [0], "label": ["/m/x"]})
    names, _ = entity_display_names(vocab, pd.DataFrame({"id": ["/m/x"], "name": [raw]}))
    assert names == [raw]
    assert prompt_text(raw) == 'Say "hi" then leave \\ café 東京 end'


def test_duplicate_names_raise() -> None:
    vocab = pd.DataFrame({"id": [0], "label": ["a"]})
    with pytest.raises(ValueError, match="more than once"):
        entity_display_names(vocab, pd.DataFrame({"id": ["a", "a"], "name": ["x", "y"]}))
