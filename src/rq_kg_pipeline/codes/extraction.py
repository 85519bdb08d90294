"""Codes of every entity from a trained RQGCN, with the measures of their quality."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rq_kg_pipeline.evaluation.code_stats import code_statistics
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
    reconstruction error of the latents after each residual level.

    One pass over cache-sized blocks of entities (``RQGCN.map_latent_blocks``): each block's
    latents are quantized once (codes, code sums and each level's squared error from the same
    search), so the [M, L, D] latents and the [M, L, Q, D] level vectors are never held. The codes
    and embeddings equal ``cal_codes`` / ``decode_from_codes`` of ``all_latent_sequences`` bit for
    bit; the errors are the search's float32 residual sums per block, added in float64 (equal to
    ``reconstruction_mse_by_level`` up to float32 rounding of the sums).
    """
    model.eval()
    squares = torch.zeros(model.num_quantizers + 1, dtype=torch.float64)  # [Q + 1]: sum of r^2 after each level, then of z^2

    def tokenise(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        found = model.quantizer.search(z)  # codes [N, Q], sums [N, D], squared errors [Q] of the N = b * L latents
        flat = z.reshape(-1).float()  # [N * D]
        squares.add_(torch.cat([found.sq_error, torch.dot(flat, flat).view(1)]).double().cpu())  # one copy to the host
        return found.indices.view(*z.shape[:-1], -1), found.summed.view(z.shape)  # [b, L, Q], [b, L, D]

    blocks = model.map_latent_blocks(graph.to(next(model.parameters()).device), tokenise, batch_size)
    codes = torch.cat([c for c, _ in blocks])  # [M, L, Q]
    embeddings = torch.cat([e for _, e in blocks])  # [M, L, D]
    count = codes.shape[0] * codes.shape[1] * model.latent_dim
    stats: dict[str, Any] = code_statistics(codes, model.num_code)
    mse = (squares / count).tolist()
    stats.update({f"reconstruction_mse_l{q + 1}": value for q, value in enumerate(mse[:-1])})
    stats["latent_mean_square"] = mse[-1]  # scale to read the MSEs against
    if disambiguate:
        index, collided = disambiguation_index(codes)
    else:
        index, collided = torch.zeros(codes.shape[0], dtype=torch.long), stats["num_collided_entities"]
    stats["num_collided_before_disambiguation"] = int(collided)
    stats["max_disambiguation"] = int(index.max())
    return Extracted(codes.cpu(), embeddings.float().cpu(), index.cpu(), stats)
