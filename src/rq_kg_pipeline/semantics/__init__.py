"""Semantic distillation: entity text embeddings from an offline sentence model, the loss that
pulls the decoded code sequence towards them, and a measure of how much meaning the codes carry."""

from rq_kg_pipeline.semantics.alignment import neighbour_agreement
from rq_kg_pipeline.semantics.cache import cached_text_embeddings, no_text_embeddings
from rq_kg_pipeline.semantics.entity_text import EntityTexts, entity_texts
from rq_kg_pipeline.semantics.loss import TextTargets, semantic_loss
from rq_kg_pipeline.semantics.text_embeddings import DEFAULT_MODEL, embed_texts, model_fingerprint, resolve_model_path

__all__ = [
    "DEFAULT_MODEL",
    "EntityTexts",
    "TextTargets",
    "cached_text_embeddings",
    "embed_texts",
    "entity_texts",
    "model_fingerprint",
    "neighbour_agreement",
    "no_text_embeddings",
    "resolve_model_path",
    "semantic_loss",
]
