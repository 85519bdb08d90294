"""A trained RQGCN as a plain dict of tensors and values: saved with torch.save, loaded with weights_only=True."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rq_kg_pipeline.models.rqgcn import RQGCN

ARTIFACT_FORMAT = 1


def model_artifact(
    model_config: Mapping[str, Any],
    num_entities: int,
    num_relations: int,
    state_dict: Mapping[str, torch.Tensor],
    **metadata: Any,
) -> dict[str, Any]:
    """Everything needed to rebuild the model: constructor arguments, sizes, weights, plus metadata."""
    return {
        "format": ARTIFACT_FORMAT,
        "model_config": dict(model_config),
        "num_entities": int(num_entities),
        "num_relations": int(num_relations),
        "state_dict": dict(state_dict),
        "metadata": dict(metadata),
    }


def load_model(artifact: Mapping[str, Any], device: torch.device | str = "auto") -> RQGCN:
    """Rebuild the RQGCN of :func:`model_artifact` in eval mode (``auto``: CUDA when available)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if artifact.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"unknown model artifact format {artifact.get('format')!r} (expected {ARTIFACT_FORMAT})")
    config = dict(artifact["model_config"])
    if isinstance(config.get("conve_dropout"), list):
        config["conve_dropout"] = tuple(config["conve_dropout"])
    model = RQGCN(artifact["num_entities"], artifact["num_relations"], **config)
    model.load_state_dict(artifact["state_dict"])
    return model.to(device).eval()
