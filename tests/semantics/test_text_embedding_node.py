"""The entity_text_embeddings node and training behind it: a KG without names trains without the
semantic term, a rerun reuses the cached embeddings, semantic_weight 0 computes nothing."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

from rq_kg_pipeline.kg.indexing import ID_COLUMNS
from rq_kg_pipeline.params import ModelParams, TextEmbeddingParams
from rq_kg_pipeline.pipelines.training import nodes
from rq_kg_pipeline.semantics import cache
from rq_kg_pipeline.training.config import TrainConfig

TINY = ModelParams(init_dim=16, gcn_dim=16, gcn_layers=1, seq_len=2, num_code=16, num_quantizers=2, att_head=2, kernel_size=3)
FIT = TrainConfig(epochs=2, batch_size=512, lr=0.01, eval_every=2, checkpoint_every=0, device="cpu", seed=1, semantic_weight=0.1)
NO_NAMES = pd.DataFrame({"id": pd.Series(dtype=object), "name": pd.Series(dtype=object)})


pytestmark = pytest.mark.usefixtures("single_thread")


def vocab(umls) -> pd.DataFrame:
    return pd.DataFrame({"id": range(umls.num_entities), "label": umls.entity_labels})


def frames(umls) -> list[pd.DataFrame]:
    return [pd.DataFrame(ids.numpy(), columns=ID_COLUMNS) for ids in (umls.train, umls.valid, umls.test)]


def fake_embedder(texts, model, batch_size, device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(len(texts))
    return torch.nn.functional.normalize(torch.randn(len(texts), 8, generator=generator), dim=1)


def test_kg_without_names_gets_no_embeddings_and_trains_without_the_term(umls, tmp_path, caplog):
    params = TextEmbeddingParams(without_names="skip", cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO):
        payload = nodes.entity_text_embeddings(vocab(umls), NO_NAMES, params, FIT)
    assert payload["embeddings"].shape == (135, 0) and payload["status"].startswith("no embeddings")
    assert "no names file" in caplog.text and not (tmp_path / "cache").exists()
    with caplog.at_level(logging.INFO):
        artifact, history = nodes.train_model(umls.graph, *frames(umls), TINY, FIT, str(tmp_path / "ckpt"), "umls", payload)
    assert "semantic_loss" not in history.columns and len(history) == 2
    assert "semantic_dim" not in artifact["model_config"] and artifact["metadata"]["fit_config"]["semantic_weight"] == 0.0
    assert not any("semantic" in key for key in artifact["state_dict"])
    assert "training without the semantic term" in caplog.text


def test_labels_are_embedded_once_then_reused_and_train_the_head(umls, tmp_path, monkeypatch, caplog):
    params = TextEmbeddingParams(without_names="labels", cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "embed_texts", fake_embedder)
    first = nodes.entity_text_embeddings(vocab(umls), NO_NAMES, params, FIT)
    assert first["embeddings"].shape == (135, 8) and first["source"] == "labels"

    def fail(*args):
        raise AssertionError("embedded again although the model and texts are unchanged")

    monkeypatch.setattr(cache, "embed_texts", fail)
    with caplog.at_level(logging.INFO):
        again = nodes.entity_text_embeddings(vocab(umls), NO_NAMES, params, FIT)
    assert "entity_text_embeddings: reused" in caplog.text and torch.equal(again["embeddings"], first["embeddings"])
    artifact, history = nodes.train_model(umls.graph, *frames(umls), TINY, FIT, str(tmp_path / "ckpt"), "umls", again)
    assert artifact["model_config"]["semantic_dim"] == 8 and artifact["state_dict"]["semantic_head.weight"].shape == (8, 16)
    assert history["semantic_loss"].between(0, 2).all()


def test_semantic_weight_zero_computes_nothing(umls, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "embed_texts", lambda *args: pytest.fail("must not embed"))
    params = TextEmbeddingParams(without_names="labels", cache_dir=str(tmp_path / "cache"))
    payload = nodes.entity_text_embeddings(vocab(umls), NO_NAMES, params, TrainConfig(semantic_weight=0.0))
    assert payload["embeddings"].shape == (135, 0) and "semantic_weight is 0" in payload["status"]
