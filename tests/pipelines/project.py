"""Run the real project (``kedro run`` in a subprocess) in a scratch copy, so tests never touch data/ or mlflow.db."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import PROJECT_ROOT

# One entity-text-embedding cache for every scratch run of this test session: the embeddings
# of a KG's names are computed once, not once per `kedro run` (loading the text model takes ~15 s).
TEXT_CACHE = tempfile.mkdtemp(prefix="rqkg-text-cache-")
atexit.register(shutil.rmtree, TEXT_CACHE, True)


@dataclass
class ScratchProject:
    """A copy of conf/ and pyproject.toml (the package is imported from its install) in a temporary folder; outputs land under ``path``."""

    path: Path

    @classmethod
    def create(cls, root: Path) -> ScratchProject:
        for name in ("pyproject.toml", ".telemetry"):
            shutil.copy(PROJECT_ROOT / name, root / name)
        shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
        (root / "conf" / "local").mkdir()
        (root / "src").mkdir()  # kedro wants the folder; the package itself is installed (pip install -e .)
        return cls(root)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
        """``kedro run ARGS`` in the scratch project; returns the finished process (check ``returncode``)."""
        return self.kedro("run", *args, env=env, timeout=timeout)

    def kedro(self, *args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
        """``kedro ARGS`` in the scratch project. COLUMNS is wide so that rich does not wrap the
        error messages that tests look for."""
        full_env = {
            **os.environ,
            "KEDRO_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "COLUMNS": "500",
            "RQKG_TEXT_CACHE": TEXT_CACHE,
            **(env or {}),
        }
        return subprocess.run(
            [sys.executable, "-m", "kedro", *args],
            cwd=self.path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def output_files(self) -> list[Path]:
        data = self.path / "data"
        return sorted(p for p in data.rglob("*") if p.is_file()) if data.exists() else []
