"""Tensors (or dicts/lists of tensors and plain values) saved with torch.save, loaded safely."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset
from kedro_datasets._typing import JSONPreview

from rq_kg_pipeline.io.atomic import atomic_torch_save


class TorchTensorDataset(AbstractDataset[Any, Any]):
    """``torch.save`` atomically; ``torch.load(weights_only=True)``, so loading never unpickles code."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> Any:
        return torch.load(self._filepath, map_location="cpu", weights_only=True)

    def save(self, data: Any) -> None:
        atomic_torch_save(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def preview(self, max_items: int = 30) -> JSONPreview:
        """Structure for kedro-viz: tensors shown as ``float32 [135, 64]``, plain values as they are."""
        return JSONPreview(json.dumps(describe_structure(self.load(), max_items)))


def describe_structure(value: Any, max_items: int = 30) -> Any:
    """A JSON-ready outline of a tensor payload; a mapping of more than ``max_items`` tensors
    (a state dict) is summarised by its count and number of values instead of listed."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    if isinstance(value, Mapping):
        tensors = [v for v in value.values() if isinstance(v, torch.Tensor)]
        if len(tensors) > max_items:
            return f"{len(tensors)} tensors, {sum(t.numel() for t in tensors):,} values"
        return {str(k): describe_structure(v, max_items) for k, v in list(value.items())[:max_items]}
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [describe_structure(v, max_items) for v in list(value)[:max_items]]
        return items + ([f"... {len(value) - max_items} more"] if len(value) > max_items else [])
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
