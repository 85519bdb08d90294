"""OmegaConf resolvers used in conf/: locate data that installed packages ship."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(module: str) -> str:
    """Folder of an importable package (without importing it), e.g. ``pykeen.datasets``."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package_dir: '{module}' is not an installed package")
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())
