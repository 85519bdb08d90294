"""Which text each entity is embedded from: names (+ description), masked gaps, labels or nothing without names."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rq_kg_pipeline.semantics.entity_text import entity_texts

VOCAB = pd.DataFrame({"id": [2, 0, 1], "label": ["/m/02", "/m/00", "amino_acid"]})  # shuffled rows


def test_names_in_id_order_and_unnamed_entities_masked_out():
    names = pd.DataFrame({"id": ["/m/02", "/m/00"], "name": [" Paris ", "Titanic"]})
    texts = entity_texts(VOCAB, names)
    assert texts.texts == ["Titanic", "", "Paris"] and texts.labels == ["/m/00", "amino_acid", "/m/02"]
    assert texts.has_text.tolist() == [True, False, True] and texts.source == "names"


def test_a_description_column_is_appended_to_the_name():
    names = pd.DataFrame({"id": ["/m/00", "/m/02"], "name": ["Titanic", "Paris"], "description": ["1997 film", None]})
    assert entity_texts(VOCAB, names).texts == ["Titanic: 1997 film", "", "Paris"]


def test_without_a_names_file_skip_gives_none_and_labels_gives_readable_labels():
    empty = pd.DataFrame({"id": pd.Series(dtype=object), "name": pd.Series(dtype=object)})
    assert entity_texts(VOCAB, empty, "skip") is None
    texts = entity_texts(VOCAB, empty, "labels")
    assert texts.texts == ["/m/00", "amino acid", "/m/02"] and torch.equal(texts.has_text, torch.ones(3, dtype=torch.bool))
    assert texts.source == "labels"


def test_bad_inputs_name_the_problem():
    names = pd.DataFrame({"id": ["/m/00", "/m/00"], "name": ["a", "b"]})
    with pytest.raises(ValueError, match="names the entity '/m/00' more than once"):
        entity_texts(VOCAB, names)
    with pytest.raises(ValueError, match="without_names must be 'skip' or 'labels'"):
        entity_texts(VOCAB, names, "ids")
    with pytest.raises(ValueError, match=r"names_table lacks the columns \['name'\]"):
        entity_texts(VOCAB, pd.DataFrame({"id": ["/m/00"]}))
