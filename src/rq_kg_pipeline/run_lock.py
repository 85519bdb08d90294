"""One ``kedro run`` at a time per KG: an exclusive OS lock on ``data/.<kg_name>.run.lock``.

Every artifact of a KG lives under ``data/*/<kg_name>/``, so two runs on the same KG would
overwrite each other's files; runs on different KGs share nothing but the MLflow store (SQLite
serialises its writers) and may run together. The second run on a KG fails at once with a
message naming the holder (pid, host, start time, command). The lock is ``flock``: the kernel
releases it when the holder dies, even by SIGKILL, so a stale lock file is simply taken over.
The file exists only while a run holds it (removed on release, with an inode check on acquire
so that removal cannot let two runs in).

Context creation is serialised per project too (a short, waiting lock): kedro-mlflow creates
the SQLite store ``mlflow.db`` on first use, and two processes creating it at once crash
(alembic's "table alembic_version already exists").
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not serialised there (logged once per run)
    fcntl = None  # type: ignore[assignment]


class RunLockError(RuntimeError):
    """Another run holds the lock of this KG's data."""


STARTUP_LOCK_NAME = ".kedro-session-start.lock"


def lock_path(project_path: str | Path, kg_name: str) -> Path:
    """``<project>/data/.<kg_name>.run.lock`` (characters other than letters, digits, ``._-`` become ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", kg_name)
    return Path(project_path) / "data" / f".{safe}.run.lock"


def _holder_text(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "another process (its details are not written yet)"


def _command() -> str:
    """This process's command line, ``kedro ...`` for ``python -m kedro ...`` too."""
    program = "kedro" if "kedro" in Path(sys.argv[0]).parts else Path(sys.argv[0]).name
    return " ".join([program, *sys.argv[1:]])


class RunLock:
    """Exclusive, non-blocking lock on ``path``; use as a context manager or acquire()/release()."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock; if another process holds it, wait for it (``wait``) or raise
        :class:`RunLockError` at once."""
        if self._handle is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        if fcntl is None:
            log.warning("no flock on this platform: concurrent runs on the same KG are not prevented")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _holder_text(handle.read())
                handle.close()
                raise RunLockError(
                    f"another kedro run is writing this KG's data ({holder}); lock {self.path}. "
                    "Wait for it to finish or stop it (a run that dies releases the lock by itself), "
                    "or run another KG (RQKG_KG_NAME) alongside it."
                ) from None
            try:
                same_file = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            handle.close()  # the holder removed the file between our open and flock: try again
        handle.seek(0)
        handle.truncate()
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": _command(),
        }
        handle.write(json.dumps(info))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Remove the file and drop the lock (no-op when not held)."""
        if self._handle is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: see the inode check in acquire
        self._handle.close()
        self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SessionStartLock:
    """Kedro hook pair: hold ``data/.kedro-session-start.lock`` (waiting for it) from the first
    to the last ``after_context_created`` implementation, so that kedro-mlflow's creation of the
    tracking store never runs in two processes of one project at once."""

    def __init__(self) -> None:
        self._lock: RunLock | None = None
        self.release_hook = _ReleaseSessionStartLock(self)

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        self.release()
        self._lock = RunLock(Path(context.project_path) / "data" / STARTUP_LOCK_NAME)
        self._lock.acquire(wait=True)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class _ReleaseSessionStartLock:
    """The releasing half of :class:`SessionStartLock` (pluggy allows one implementation of a
    hook per object)."""

    def __init__(self, owner: SessionStartLock) -> None:
        self._owner = owner

    @hook_impl(trylast=True)
    def after_context_created(self) -> None:
        self._owner.release()


class RunLockHook:
    """Kedro hook: take the KG's run lock before the pipeline (before kedro-mlflow opens a run,
    so a refused run leaves no MLflow run behind) and release it after success or failure."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._lock: RunLock | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        kg_name = str(context.config_loader["globals"].get("kg_name", "default"))
        self._path = lock_path(context.project_path, kg_name)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._release()  # a session in this process that failed before its pipeline ran
        path = self._path or lock_path(run_params["project_path"], "default")
        self._lock = RunLock(path)
        self._lock.acquire()

    @hook_impl(trylast=True)
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl(trylast=True)
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
