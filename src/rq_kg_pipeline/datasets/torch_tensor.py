"""Tensors (or dicts/lists of tensors and plain values) saved with torch.save, loaded safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset

from rq_kg_pipeline.io.atomic import atomic_path


class TorchTensorDataset(AbstractDataset[Any, Any]):
    """``torch.save`` atomically; ``torch.load(weights_only=True)``, so loading never unpickles code."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> Any:
        return torch.load(self._filepath, map_location="cpu", weights_only=True)

    def save(self, data: Any) -> None:
        with atomic_path(self._filepath) as tmp:
            torch.save(data, tmp)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
