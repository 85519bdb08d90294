"""Pieces shared by the prompt builders: input checks, entity mentions and the record layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rq_kg_pipeline.prompts.names import prompt_text

CODES_EXPLANATION = "Each entity is followed by its quantized representation, a sequence of code tokens."


def check_lookups(entity_names: Sequence[str], entity_codes: Sequence[str], relation_names: Sequence[str]) -> int:
    """Validate the per-entity and per-relation lookups; return R (relation_names holds 2R names)."""
    if len(entity_names) != len(entity_codes):
        raise ValueError(
            f"entity_names ({len(entity_names)}) and entity_codes ({len(entity_codes)}) must have one entry per entity"
        )
    if len(relation_names) == 0 or len(relation_names) % 2:
        raise ValueError(
            f"relation_names must hold 2R names (relations, then their inverses), got {len(relation_names)}"
        )
    return len(relation_names) // 2


def as_ids(values: torch.Tensor | Sequence[int], name: str, dims: int, upper: int, lower: int = 0) -> torch.Tensor:
    """``values`` as a CPU int64 tensor of ``dims`` dimensions with every id in [lower, upper)."""
    tensor = torch.as_tensor(values).detach().cpu()
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer ids, got {tensor.dtype}")
    if tensor.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimension(s), got shape {tuple(tensor.shape)}")
    tensor = tensor.long()
    if tensor.numel() and (int(tensor.min()) < lower or int(tensor.max()) >= upper):
        raise ValueError(f"{name} ids must lie in [{lower}, {upper}), found [{int(tensor.min())}, {int(tensor.max())}]")
    return tensor


def per_example_flags(value: bool | torch.Tensor | Sequence[bool], count: int, name: str) -> list[bool]:
    """A bool per example from one bool or a [N] bool sequence."""
    if isinstance(value, (bool, np.bool_)):
        return [bool(value)] * count
    flags = [bool(flag) for flag in torch.as_tensor(value).reshape(-1).tolist()]
    if len(flags) != count:
        raise ValueError(f"{name} must be a bool or hold one flag per example ({count}), got {len(flags)}")
    return flags


def entity_mention(name: str, codes: str, with_codes: bool) -> str:
    """An entity as the prompt shows it: its cleaned name, followed by its code tokens when ``with_codes``."""
    shown = prompt_text(name)
    return f"{shown} {codes}" if with_codes else shown


def relation_parts(relation: int, num_relations: int) -> tuple[int, bool]:
    """Base relation id in [0, R) and whether ``relation`` (in [0, 2R)) is the inverse."""
    return (relation - num_relations, True) if relation >= num_relations else (relation, False)


def make_record(prompt: str, completion: str, task: str, **fields: Any) -> dict[str, Any]:
    """A dataset record: prompt/completion, the same as chat messages, the task name and metadata fields."""
    return {
        "prompt": prompt,
        "completion": completion,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
        "task": task,
        **fields,
    }
