"""Training of the RQ-GCN: 1-N queries, the loop with early stopping, and resumable checkpoints."""

from rq_kg_pipeline.training.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from rq_kg_pipeline.training.config import TrainConfig
from rq_kg_pipeline.training.loop import FitResult, NonFiniteLossError, fit
from rq_kg_pipeline.training.queries import QueryBatch, TrainQueries

__all__ = [
    "CheckpointError",
    "FitResult",
    "NonFiniteLossError",
    "QueryBatch",
    "TrainConfig",
    "TrainQueries",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
]
