"""Optional Triton kernels: whether Triton is installed, whether a route should use it, and the
lazy import of a kernel module (defined only when first used, so CPU-only runs never import Triton)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import torch


def available() -> bool:
    """Whether Triton can be imported."""
    return importlib.util.find_spec("triton") is not None


def use_triton(requested: bool | None, device: torch.device, name: str) -> bool:
    """Whether a route on ``device`` runs its Triton kernels: ``requested`` None means on CUDA when
    Triton is installed; True always (on CPU only under ``TRITON_INTERPRET=1``); False never."""
    if requested is None:
        return device.type == "cuda" and available()
    if requested and not available():
        raise ValueError(f"{name}=True needs Triton, which is not installed")
    return bool(requested)


def kernels(module: str) -> ModuleType:
    """The kernel module ``module``, imported on first use."""
    return importlib.import_module(module)
