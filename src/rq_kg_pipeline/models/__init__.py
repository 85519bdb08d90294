"""Models: residual quantizer, CompGCN encoder (native / DGL message passing), ConvE scorer, RQGCN."""

from rq_kg_pipeline.models.compgcn import CompGCNEncoder, CompGCNLayer
from rq_kg_pipeline.models.conve import ConvEScorer, default_conve_shape
from rq_kg_pipeline.models.message_passing import BACKENDS, COMPOSITIONS, circular_correlation, compose
from rq_kg_pipeline.models.rq_codebook import RQCodebook, RQOutput
from rq_kg_pipeline.models.rqgcn import RQGCN, RQGCNOutput

__all__ = [
    "BACKENDS",
    "COMPOSITIONS",
    "CompGCNEncoder",
    "CompGCNLayer",
    "ConvEScorer",
    "RQCodebook",
    "RQGCN",
    "RQGCNOutput",
    "RQOutput",
    "circular_correlation",
    "compose",
    "default_conve_shape",
]
