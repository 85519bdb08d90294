"""Atomic, verified training checkpoints that load with ``torch.load(..., weights_only=True)``.

Each checkpoint is written to a temporary file beside its target and renamed over it, with a
``sha256sum``-style sidecar (``<name>.sha256``) holding the digest of the file's bytes. A file
whose digest does not match (truncated, corrupted, or the crash fell between the two writes)
is reported and skipped, and the previous one is used; the newest ``keep`` epoch checkpoints
are kept, and temporary files that a killed writer left behind are removed at the next save.
Payloads hold only tensors and plain Python values (RNG states become tensors).
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rq_kg_pipeline.io.atomic import atomic_path

log = logging.getLogger(__name__)

BEST_NAME = "best.pt"
_EPOCH_RE = re.compile(r"^checkpoint-epoch(\d+)\.pt$")
# Temporary files of io.atomic.atomic_path (".<target name>.<random>.tmp") for checkpoint targets.
_TEMP_RE = re.compile(r"^\.(?:checkpoint-epoch\d+|best)\.pt(?:\.sha256)?\..+\.tmp$")


class CheckpointError(ValueError):
    """A checkpoint file is missing its digest, does not match it, or cannot be read."""


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint-epoch{epoch:06d}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_verified(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` to ``path`` atomically and write its SHA-256 sidecar."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getbuffer()  # a view: no second copy of the bytes
    digest = hashlib.sha256(data).hexdigest()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    with atomic_path(_sidecar(path)) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return path


def _read_verified(path: Path) -> bytes:
    """The file's bytes if they match the sidecar digest; CheckpointError otherwise."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise CheckpointError(f"checkpoint {path} has no digest file {sidecar.name}")
    expected = sidecar.read_text(encoding="utf-8").split()[:1]
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected != [actual]:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated: SHA-256 {actual} does not match "
            f"{expected[0] if expected else 'an empty digest file'} ({len(data)} bytes)"
        )
    return data


def verify_checkpoint(path: str | Path) -> str | None:
    """None if ``path`` matches its digest, else the reason it does not."""
    try:
        _read_verified(Path(path))
    except CheckpointError as err:
        return str(err)
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify the digest, then load with ``weights_only=True``; CheckpointError if either fails."""
    path = Path(path)
    data = _read_verified(path)
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # digest matched, so the writer stored something unloadable
        raise CheckpointError(f"checkpoint {path} cannot be loaded with weights_only=True: {err}") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, expected a dict")
    return payload


def epoch_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the epoch checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _EPOCH_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest epoch checkpoint in ``directory`` that matches its digest, or None; every
    newer one that does not is logged as a warning."""
    for _, path in reversed(epoch_checkpoints(directory)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        log.warning("%s; skipping it and falling back to the previous checkpoint", problem)
    return None


def save_checkpoint(directory: str | Path, payload: dict[str, Any], epoch: int, keep: int = 2) -> Path:
    """Write the checkpoint of ``epoch``, delete all but the newest ``keep`` epoch checkpoints, and
    remove temporary checkpoint files left by a writer that was killed (one writer per directory:
    ``kedro run`` holds the run lock while it trains)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(directory)
    path = write_verified(directory / checkpoint_name(epoch), payload)
    for _, old in epoch_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        _sidecar(old).unlink(missing_ok=True)
    for leftover in directory.iterdir():
        if _TEMP_RE.match(leftover.name):
            log.info("removing %s, left by an interrupted checkpoint write", leftover)
            leftover.unlink(missing_ok=True)
    return path


def capture_rng_state(generator: torch.Generator | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Every RNG that training draws from, as tensors and plain values; of the CUDA ones, the
    training ``device``'s (every data-parallel process draws alike on its own GPU)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    on_cuda = device is not None and device.type == "cuda"
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": [torch.cuda.get_rng_state(device)] if on_cuda else [],
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(
    state: dict[str, Any], generator: torch.Generator | None = None, device: torch.device | None = None
) -> None:
    """Inverse of :func:`capture_rng_state`; the stored CUDA state goes to the training ``device``."""
    torch.set_rng_state(state["torch_cpu"].cpu())
    cuda_states = state["torch_cuda"]
    if cuda_states and device is not None and device.type == "cuda":
        if len(cuda_states) != 1:  # written by an older version: one state per visible GPU
            log.warning("checkpoint has CUDA RNG states for %d devices; restoring the first", len(cuda_states))
        torch.cuda.set_rng_state(cuda_states[0].cpu(), device)
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached_gaussian"])
    )
    if generator is not None:
        generator.set_state(state["generator"].cpu())
