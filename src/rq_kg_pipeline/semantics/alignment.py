"""How much of the entities' meaning their codes carry: agreement between nearest neighbours by
code-decoded vectors and nearest neighbours by text embedding.

For each entity with a text, the share of its ``k`` nearest neighbours (cosine, among entities
with a text, itself excluded) that are the same in both spaces, averaged. A random arrangement
scores about ``k / (N - 1)``; 1 means the codes order every entity's neighbourhood as its text does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _neighbours(vectors: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """[N, k] indices of each row's k most cosine-similar other rows of ``vectors`` [N, X]."""
    unit = F.normalize(vectors.float(), dim=1)  # [N, X]
    out = []
    for start in range(0, unit.shape[0], batch_size):
        sims = unit[start : start + batch_size] @ unit.T  # [b, N]
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -float("inf")  # not its own neighbour
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out)


@torch.no_grad()
def neighbour_agreement(
    code_vectors: torch.Tensor, text_embeddings: torch.Tensor, mask: torch.Tensor, k: int = 10, batch_size: int = 1024
) -> dict[str, float]:
    """Mean top-``k`` neighbour overlap of code_vectors [M, D] and text_embeddings [M, E] over
    entities where ``mask`` [M] holds, and its chance level ``k / (N - 1)``."""
    if code_vectors.shape[0] != text_embeddings.shape[0] or mask.shape != code_vectors.shape[:1]:
        raise ValueError(
            f"code_vectors {tuple(code_vectors.shape)}, text_embeddings {tuple(text_embeddings.shape)} "
            f"and mask {tuple(mask.shape)} must cover the same entities"
        )
    n = int(mask.sum())
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} entities with a text, got {k}")
    code_nn = _neighbours(code_vectors.cpu()[mask.cpu()], k, batch_size)  # [N, k]
    text_nn = _neighbours(text_embeddings.cpu()[mask.cpu()], k, batch_size)  # [N, k]
    same = (code_nn.unsqueeze(2) == text_nn.unsqueeze(1)).any(dim=2).float()  # [N, k]
    return {"text_neighbour_agreement": float(same.mean()), "text_neighbour_chance": k / (n - 1), "text_neighbour_k": float(k)}
