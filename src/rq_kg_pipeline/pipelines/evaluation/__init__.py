"""Evaluation: filtered MRR/Hits from codes alone and from the continuous encoder, and plots."""

from rq_kg_pipeline.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
