"""Ingestion: raw TSV KG -> vocabularies, id triples, the training graph (native and DGL), statistics."""

from rq_kg_pipeline.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
