"""The semantic term: a head maps each decoded code sequence to the text-embedding space and
is pulled towards the entity's text embedding.

Loss: mean over entities with a text of ``1 - cos(head(aggregate(z_q)), text_embedding)``.
Cosine rather than MSE because sentence embeddings carry their meaning in their direction
(all-MiniLM-L6-v2 outputs unit vectors, compared by cosine): MSE would also spend the head's
capacity on matching norms, and its size depends on the embedding width E (per dimension it
is about 2 (1 - cos) / E for unit vectors), so one ``semantic_weight`` would mean different
things for different text models. ``1 - cos`` lies in [0, 2] whatever the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TextTargets:
    """Text embeddings of all entities and which entities have one, as the training loop uses them."""

    embeddings: torch.Tensor  # [M, E] float32
    mask: torch.Tensor  # [M] bool: entity has a text

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[1] < 1:
            raise ValueError(f"text embeddings must be [M, E] with E >= 1, got {tuple(self.embeddings.shape)}")
        if self.mask.shape != self.embeddings.shape[:1] or self.mask.dtype != torch.bool:
            raise ValueError(f"text mask must be bool [M={self.embeddings.shape[0]}], got {self.mask.dtype} {tuple(self.mask.shape)}")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def num_entities(self) -> int:
        return int(self.embeddings.shape[0])

    def to(self, device: torch.device | str) -> TextTargets:
        return TextTargets(self.embeddings.to(device), self.mask.to(device))

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any] | None) -> TextTargets | None:
        """From the ``entity_text_embeddings`` artifact; ``None`` when it holds no embeddings."""
        if payload is None or payload["embeddings"].shape[1] == 0 or not bool(payload["mask"].any()):
            return None
        return cls(payload["embeddings"].float(), payload["mask"].bool())


def semantic_loss(predicted: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` of predicted [U, E] vs targets [U, E] over rows where ``mask`` [U] holds
    (0 when none does; no host sync, so a CUDA step never waits)."""
    cos = F.cosine_similarity(predicted.float(), targets.float(), dim=-1)  # [U]
    weights = mask.float()  # [U]
    return ((1.0 - cos) * weights).sum() / weights.sum().clamp_min(1.0)
