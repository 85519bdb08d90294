"""Training: the RQGCN (CompGCN encoder -> latent sequence -> residual quantizer -> ConvE decoder)."""

from rq_kg_pipeline.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
