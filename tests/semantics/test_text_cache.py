"""Embeddings are cached by model and texts: a rerun reuses them without embedding, a change recomputes."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

from rq_kg_pipeline.semantics.cache import cached_text_embeddings
from rq_kg_pipeline.semantics.entity_text import entity_texts

VOCAB = pd.DataFrame({"id": [0, 1, 2], "label": ["/m/a", "/m/b", "/m/c"]})
NAMES = pd.DataFrame({"id": ["/m/a", "/m/c"], "name": ["Paris", "Titanic"]})


class CountingEmbedder:
    """A fake sentence model: text length and vowel count as a 2-d embedding, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts, model, batch_size, device) -> torch.Tensor:
        self.calls.append(list(texts))
        return torch.tensor([[float(len(t)), float(sum(c in "aeiou" for c in t.lower()))] for t in texts])


def fail(*args) -> torch.Tensor:
    raise AssertionError("the embedder must not run when the cache matches")


def test_second_call_reuses_the_cache_without_embedding(tmp_path, caplog):
    texts = entity_texts(VOCAB, NAMES)
    embedder = CountingEmbedder()
    first, reused = cached_text_embeddings(texts, "default", 8, "cpu", tmp_path, embed=embedder)
    assert not reused and embedder.calls == [["Paris", "Titanic"]]  # the unnamed entity is not embedded
    assert first["embeddings"].tolist() == [[5.0, 2.0], [0.0, 0.0], [7.0, 3.0]]
    assert first["mask"].tolist() == [True, False, True] and first["entities"] == ["/m/a", "/m/b", "/m/c"]
    with caplog.at_level(logging.INFO, logger="rq_kg_pipeline.semantics.cache"):
        second, reused = cached_text_embeddings(texts, "default", 8, "cpu", tmp_path, embed=fail)
    assert reused and "reused" in caplog.text
    assert torch.equal(second["embeddings"], first["embeddings"]) and second["key"] == first["key"]


def test_changed_names_or_model_recompute(tmp_path):
    embedder = CountingEmbedder()
    cached_text_embeddings(entity_texts(VOCAB, NAMES), "default", 8, "cpu", tmp_path, embed=embedder)
    renamed = NAMES.assign(name=["Paris", "Titanic (film)"])
    _, reused = cached_text_embeddings(entity_texts(VOCAB, renamed), "default", 8, "cpu", tmp_path, embed=embedder)
    assert not reused
    other_model = tmp_path / "my_model"
    other_model.mkdir()
    (other_model / "config.json").write_text("{}")
    payload, reused = cached_text_embeddings(entity_texts(VOCAB, NAMES), str(other_model), 8, "cpu", tmp_path, embed=embedder)
    assert not reused and payload["model"].startswith(str(other_model.resolve()))
    assert len(embedder.calls) == 3 and len(list(tmp_path.glob("*.pt"))) == 3


def test_a_corrupt_cache_file_is_recomputed(tmp_path, caplog):
    texts = entity_texts(VOCAB, NAMES)
    cached_text_embeddings(texts, "default", 8, "cpu", tmp_path, embed=CountingEmbedder())
    (cached,) = tmp_path.glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:50])
    with caplog.at_level(logging.WARNING):
        payload, reused = cached_text_embeddings(texts, "default", 8, "cpu", tmp_path, embed=CountingEmbedder())
    assert not reused and "unreadable" in caplog.text and payload["embeddings"].shape == (3, 2)


def test_a_model_that_is_no_local_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a folder .models are never downloaded"):
        cached_text_embeddings(entity_texts(VOCAB, NAMES), "sentence-transformers/all-mpnet-base-v2", 8, "cpu", tmp_path)
