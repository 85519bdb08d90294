"""Entity text embeddings cached on disk, keyed by the model and the exact texts.

The key is SHA-256 over the model fingerprint (package version, or a local folder's files) and
the texts in entity order, which come from the names file and the vocabulary: change either and
the embeddings are recomputed; otherwise the cached file is reused. Cache entries are
content-addressed (``<key>.pt``), so several models or KGs can share one folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rq_kg_pipeline.io.atomic import atomic_torch_save
from rq_kg_pipeline.semantics.entity_text import EntityTexts
from rq_kg_pipeline.semantics.text_embeddings import embed_texts, model_fingerprint

log = logging.getLogger(__name__)

PAYLOAD_FORMAT = 1
Embedder = Callable[[Sequence[str], str, int, str], torch.Tensor]


def texts_sha256(texts: EntityTexts) -> str:
    """SHA-256 of the entity texts in id order (what the names file and vocabulary give)."""
    return hashlib.sha256(json.dumps(texts.texts, ensure_ascii=False).encode()).hexdigest()


def cache_key(fingerprint: str, texts: EntityTexts) -> str:
    return hashlib.sha256(json.dumps([PAYLOAD_FORMAT, fingerprint, texts_sha256(texts)]).encode()).hexdigest()


def no_text_embeddings(labels: Sequence[str], reason: str) -> dict[str, Any]:
    """The artifact of a KG without texts: ``embeddings`` [M, 0], nothing masked in, and why."""
    m = len(labels)
    return {
        "format": PAYLOAD_FORMAT,
        "embeddings": torch.zeros(m, 0),
        "mask": torch.zeros(m, dtype=torch.bool),
        "entities": list(labels),
        "status": f"no embeddings: {reason}",
    }


def _load_matching(path: Path, key: str, num_entities: int) -> dict[str, Any] | None:
    """The cached payload at ``path`` if it exists, loads and has ``key``; else None (a bad file is reported)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: recompute rather than fail
        log.warning("text embedding cache %s unreadable (%s); recomputing", path, error)
        return None
    if payload.get("key") != key or payload["embeddings"].shape[0] != num_entities:
        log.warning("text embedding cache %s does not match its key; recomputing", path)
        return None
    return payload


def cached_text_embeddings(
    texts: EntityTexts,
    model: str,
    batch_size: int,
    device: str,
    cache_dir: str | Path,
    embed: Embedder | None = None,
) -> tuple[dict[str, Any], bool]:
    """(payload, reused): the embeddings of ``texts`` from ``cache_dir`` when cached, else computed
    with ``embed`` (default :func:`embed_texts`) and cached. Payload: ``embeddings`` [M, E] float32 (zeros where ``mask`` [M] is
    False), ``entities`` (labels in id order), ``model``, ``texts_sha256``, ``key``, ``source``, ``status``."""
    fingerprint = model_fingerprint(model)
    key = cache_key(fingerprint, texts)
    path = Path(cache_dir) / f"{key[:32]}.pt"
    cached = _load_matching(path, key, len(texts.texts))
    if cached is not None:
        log.info("text embeddings reused from %s (model %s, key %s)", path, fingerprint, key[:16])
        return cached, True
    rows = texts.has_text.nonzero().squeeze(1)  # [N] entities with a text
    if rows.numel() == 0:
        raise ValueError("no entity has a text to embed")
    embed = embed if embed is not None else embed_texts
    vectors = embed([texts.texts[i] for i in rows.tolist()], model, batch_size, device)  # [N, E]
    if vectors.ndim != 2 or vectors.shape[0] != rows.numel():
        raise ValueError(f"the embedder returned {tuple(vectors.shape)} for {rows.numel()} texts")
    embeddings = torch.zeros(len(texts.texts), vectors.shape[1])  # [M, E]
    embeddings[rows] = vectors.float().cpu()
    payload = {
        "format": PAYLOAD_FORMAT,
        "embeddings": embeddings,
        "mask": texts.has_text.clone(),
        "entities": list(texts.labels),
        "model": fingerprint,
        "texts_sha256": texts_sha256(texts),
        "key": key,
        "source": texts.source,
        "status": f"{rows.numel()} of {len(texts.texts)} entities embedded from {texts.source}",
    }
    atomic_torch_save(payload, path)
    log.info("text embeddings computed (%s, model %s) and cached in %s", payload["status"], fingerprint, path)
    return payload, False
