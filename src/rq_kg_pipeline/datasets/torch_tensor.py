"""Tensors (or dicts/lists of tensors and plain values) saved with torch.save, loaded safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset

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
