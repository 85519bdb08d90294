"""TIGER-style disambiguation: an extra index that makes every entity's code sequence unique.

Entities sharing the same full [L, Q] code sequence are numbered 0, 1, 2, ... in entity-id
order; entities with a unique sequence get 0. The (codes, index) pair then names one entity.
"""

from __future__ import annotations

import torch

from rq_kg_pipeline.evaluation.code_stats import check_codes, unique_rows


def disambiguation_index(codes: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per-entity disambiguation index [M] int64 and the number of entities that collided before it.

    Vectorised: the groups of equal flattened rows (``unique_rows``) plus a stable sort of the group ids.
    """
    codes = check_codes(codes)
    num_entities = codes.shape[0]
    rows = codes.reshape(num_entities, -1)  # [M, L*Q]
    group, counts = unique_rows(rows)  # [M], [G]
    order = torch.sort(group, stable=True).indices  # [M] entity ids grouped, id order kept inside a group
    group_start = torch.cumsum(counts, dim=0) - counts  # [G] first slot of each group in ``order``
    slots = torch.arange(num_entities, dtype=torch.int64, device=codes.device)  # [M] positions in ``order``
    rank = slots - group_start[group[order]]  # [M] rank inside the group, for entity order[i]
    index = torch.empty(num_entities, dtype=torch.int64, device=codes.device)
    index[order] = rank
    num_collided = int((counts[group] > 1).sum())
    return index, num_collided
