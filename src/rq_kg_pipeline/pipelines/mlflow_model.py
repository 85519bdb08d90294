"""The trained model in MLflow: a pickle-free ``torch.export`` program mapping codes to entity vectors.

``mlflow.pytorch.load_model(uri)`` returns a module that takes codes ``[N, L, Q]`` (int64) and
gives the decoded entity vectors ``[N, D]`` the codes-only link prediction scores with; it needs
torch only (not this package), and MLflow checks the archive is free of pickles before loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec
from torch import Tensor, nn

from rq_kg_pipeline.models.persistence import load_model
from rq_kg_pipeline.models.rqgcn import RQGCN

MODEL_NAME = "code_decoder"


class CodeDecoder(nn.Module):
    """codes [N, L, Q] -> entity vectors [N, D]: the chosen code vectors summed over the Q levels,
    then RQGCN's position-aware decoder (``RQGCN.entity_vectors_from_codes`` without its
    value-range check, which ``torch.export`` cannot trace; an out-of-range code fails indexing)."""

    def __init__(self, model: RQGCN) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor) -> Tensor:
        codebooks = self.model.quantizer.codebooks  # [Q, K, D]
        levels = torch.arange(codebooks.shape[0], device=codes.device)  # [Q], broadcast over [N, L, Q]
        return self.model.aggregate(codebooks[levels, codes].sum(dim=-2))  # [N, L, Q, D] -> [N, L, D] -> [N, D]


def code_decoder_signature(seq_len: int, num_quantizers: int, latent_dim: int) -> ModelSignature:
    """int64 [-1, L, Q] in, float32 [-1, D] out (unnamed tensors: MLflow serves them as plain arrays)."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, seq_len, num_quantizers))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, latent_dim))]),
    )


def log_code_decoder(artifact: Mapping[str, Any], name: str = MODEL_NAME) -> ModelInfo | None:
    """Log the model artifact's :class:`CodeDecoder` to the active MLflow run (None without one)."""
    if mlflow.active_run() is None:
        return None
    model = load_model(artifact, device="cpu")
    decoder = CodeDecoder(model).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(0, model.num_code, (3, model.seq_len, model.num_quantizers), generator=generator)  # [3, L, Q]
    metadata = {
        "input": "codes [N, seq_len, num_quantizers] int64, one row per entity",
        "output": "decoded entity vectors [N, latent_dim] float32",
        "seq_len": int(model.seq_len),
        "num_quantizers": int(model.num_quantizers),
        "num_code": int(model.num_code),
        "latent_dim": int(model.latent_dim),
        "num_entities": int(model.num_entities),
        "dataset": str(artifact.get("metadata", {}).get("dataset", "unknown")),
    }
    return mlflow.pytorch.log_model(
        decoder,
        name=name,
        signature=code_decoder_signature(model.seq_len, model.num_quantizers, model.latent_dim),
        input_example=example.numpy(),
        serialization_format="pt2",  # torch.export archive: no pickle, no project code needed to load
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        metadata=metadata,
    )
