"""Look at a web page the way a person does: headless Chromium (Debian's ``chromium``), local servers.

Helpers for the kedro-viz and MLflow UI tests: a free port, a background server process that is
stopped with its whole process group, Chromium's DOM after scripts ran, a screenshot, and a
check that a PNG shows something (not one flat colour).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"  # git-ignored (build/)


def chromium() -> str | None:
    """Path of the Chromium binary, or None when it is not installed (``apt-get install chromium``)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def background(command: list[str], cwd: Path, ready_url: str, log: Path, timeout: float = 120.0) -> Iterator[subprocess.Popen]:
    """Run ``command`` until the block ends; waits until ``ready_url`` answers 200. The process
    gets its own session, so stopping it also stops the workers it started (uvicorn)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ready_url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def headless(url: str, profile: Path, *extra: str, budget_ms: int = 20000, window: str = "1600,1000") -> subprocess.CompletedProcess:
    """Chromium on ``url`` with a fresh profile folder, letting scripts run for ``budget_ms`` of
    virtual time; ``extra`` adds ``--dump-dom`` or ``--screenshot=PATH``."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    args = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window}", f"--virtual-time-budget={budget_ms}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=180, check=True)


def dom_of(url: str, profile: Path, budget_ms: int = 20000) -> str:
    """The page's DOM after its scripts ran (what the browser shows, as HTML)."""
    return headless(url, profile, "--dump-dom", budget_ms=budget_ms).stdout


def screenshot(url: str, profile: Path, path: Path, budget_ms: int = 20000, window: str = "1600,1000") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    headless(url, profile, f"--screenshot={path}", budget_ms=budget_ms, window=window)
    return path


def distinct_colours(path: Path) -> int:
    """How many distinct RGB colours the PNG has (1 for a blank page)."""
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)  # [H*W, 3]
    return len(np.unique(pixels, axis=0))
