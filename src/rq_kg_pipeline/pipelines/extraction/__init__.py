"""Extraction: codes [M, L, Q] and quantized embeddings [M, L, D] of every entity, under the seed's names."""

from rq_kg_pipeline.pipelines.extraction.pipeline import create_pipeline

__all__ = ["create_pipeline"]
