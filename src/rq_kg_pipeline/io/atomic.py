"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash mid-write leaves the previous file (or none) in place, never a truncated one that a
later node would load. ``os.replace`` is atomic on POSIX and Windows within one filesystem.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_UMASK = _read_umask()  # read once: os.umask is process-wide, so not per write


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``target``, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_torch_save(obj: Any, target: str | Path) -> None:
    """``torch.save`` through :func:`atomic_path`. Saving into an open handle keeps the archive's
    inner name fixed ("archive"), so equal tensors give byte-identical files whatever the temp name."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
