"""Codes of every entity from a trained RQGCN, with the measures of their quality."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rq_kg_pipeline.evaluation.code_stats import code_statistics, reconstruction_mse_by_level
from rq_kg_pipeline.evaluation.unique_codes import disambiguation_index
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models.rqgcn import RQGCN


@dataclass
class Extracted:
    codes: torch.Tensor  # [M, L, Q] int64
    embeddings: torch.Tensor  # [M, L, D] sum of chosen code vectors
    disambiguation: torch.Tensor  # [M] int64 (all 0 when not requested or no collision)
    statistics: dict[str, Any]


@torch.no_grad()
def extract_codes(model: RQGCN, graph: KGGraph, batch_size: int = 4096, disambiguate: bool = True) -> Extracted:
    """Encode the graph once, tokenise every entity with the model's own ``latent_sequence``
    (the training path), quantize, and measure: unique-code rate, per-level usage, and the
    reconstruction error of the latents after each residual level."""
    model.eval()
    latents = model.all_latent_sequences(graph.to(next(model.parameters()).device), batch_size)  # [M, L, D]
    codes = model.quantizer.cal_codes(latents)  # [M, L, Q]
    embeddings = model.quantizer.decode_from_codes(codes)  # [M, L, D]
    stats: dict[str, Any] = code_statistics(codes, model.num_code)
    mse = reconstruction_mse_by_level(latents, model.quantizer.level_code_vectors(codes))
    stats.update({f"reconstruction_mse_l{q + 1}": value for q, value in enumerate(mse)})
    stats["latent_mean_square"] = float(latents.pow(2).mean())  # scale to read the MSEs against
    if disambiguate:
        index, collided = disambiguation_index(codes)
    else:
        index, collided = torch.zeros(codes.shape[0], dtype=torch.long), stats["num_collided_entities"]
    stats["num_collided_before_disambiguation"] = int(collided)
    stats["max_disambiguation"] = int(index.max())
    return Extracted(codes.cpu(), embeddings.float().cpu(), index.cpu(), stats)
