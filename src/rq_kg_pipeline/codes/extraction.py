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


class _LevelErrors:
    """Running float64 sums, over latent blocks, of what ``reconstruction_mse_by_level`` and the
    latents' mean square need: per level q, sum of (z - (e_1 + ... + e_q))^2 (the same float32
    elementwise values, level 1 first), and sum of z^2."""

    def __init__(self, codebooks: torch.Tensor) -> None:
        self.books = codebooks.detach()  # [Q, K, D]
        self.level_sums = torch.zeros(codebooks.shape[0], dtype=torch.float64)  # [Q]
        self.latent_sum = 0.0
        self.count = 0

    def add(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """z [b, L, D] latents and their codes [b, L, Q]."""
        flat, idx = z.reshape(-1, z.shape[-1]), codes.reshape(-1, codes.shape[-1])  # [N, D], [N, Q]
        recon = self.books[0].index_select(0, idx[:, 0])  # [N, D] = 0 + e_1 (the same squares below)
        diff = torch.empty_like(flat)  # [N, D] reused: (z - recon)^2 in place
        for q in range(self.books.shape[0]):
            if q:
                recon.add_(self.books[q].index_select(0, idx[:, q]))
            torch.sub(flat, recon, out=diff)
            self.level_sums[q] += torch.sum(diff.mul_(diff), dtype=torch.float64).cpu()
        self.latent_sum += float(torch.sum(flat * flat, dtype=torch.float64))
        self.count += flat.numel()


@torch.no_grad()
def extract_codes(model: RQGCN, graph: KGGraph, batch_size: int = 4096, disambiguate: bool = True) -> Extracted:
    """Encode the graph once, tokenise every entity with the model's own ``latent_sequence``
    (the training path), quantize, and measure: unique-code rate, per-level usage, and the
    reconstruction error of the latents after each residual level.

    One pass over cache-sized blocks of entities (``RQGCN.map_latent_blocks``): each block's
    latents are quantized (codes and code sums from one search) and measured at once, so the
    [M, L, D] latents and the [M, L, Q, D] level vectors are never held. The codes and
    embeddings equal ``cal_codes`` / ``decode_from_codes`` of ``all_latent_sequences`` bit for
    bit; the error sums are float64 over blocks (equal to ``reconstruction_mse_by_level`` up to
    float64 rounding).
    """
    model.eval()
    errors = _LevelErrors(model.quantizer.codebooks)

    def tokenise(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, sums = model.quantizer.cal_codes_and_sums(z)  # [b, L, Q], [b, L, D]
        errors.add(z, codes)
        return codes, sums

    blocks = model.map_latent_blocks(graph.to(next(model.parameters()).device), tokenise, batch_size)
    codes = torch.cat([c for c, _ in blocks])  # [M, L, Q]
    embeddings = torch.cat([e for _, e in blocks])  # [M, L, D]
    stats: dict[str, Any] = code_statistics(codes, model.num_code)
    mse = (errors.level_sums / errors.count).tolist()
    stats.update({f"reconstruction_mse_l{q + 1}": value for q, value in enumerate(mse)})
    stats["latent_mean_square"] = errors.latent_sum / errors.count  # scale to read the MSEs against
    if disambiguate:
        index, collided = disambiguation_index(codes)
    else:
        index, collided = torch.zeros(codes.shape[0], dtype=torch.long), stats["num_collided_entities"]
    stats["num_collided_before_disambiguation"] = int(collided)
    stats["max_disambiguation"] = int(index.max())
    return Extracted(codes.cpu(), embeddings.float().cpu(), index.cpu(), stats)
