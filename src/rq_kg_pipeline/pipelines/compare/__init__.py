"""compare: the same data and budget with plain VQ (Q = 1) and with residual quantization, side by side."""

from rq_kg_pipeline.pipelines.compare.pipeline import create_pipeline

__all__ = ["create_pipeline"]
