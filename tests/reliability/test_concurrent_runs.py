"""Concurrent ``kedro run``s in one project: one run per KG at a time (the second fails fast,
naming the holder), runs on different KGs both succeed on separate MLflow runs, and a lock left
by a killed run is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest

from rq_kg_pipeline.run_lock import STARTUP_LOCK_NAME, RunLock, RunLockError, RunLockHook, SessionStartLock, lock_path
from tests.conftest import PROJECT_ROOT, umls_dir
from tests.pipelines.project import ScratchProject

HOLDER = textwrap.dedent(
    """
    import sys, time
    from rq_kg_pipeline.run_lock import RunLock
    lock = RunLock(sys.argv[1])
    lock.acquire()
    print("HELD", flush=True)
    time.sleep(600)
    """
)


def hold_lock(path: Path) -> subprocess.Popen:
    """A separate process that takes the lock at ``path`` and keeps it until killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "HELD"
    return process


def test_lock_is_exclusive_names_its_holder_and_is_taken_over_after_a_kill(tmp_path) -> None:
    path = lock_path(tmp_path, "my kg/1")
    assert path == tmp_path / "data" / ".my_kg_1.run.lock"
    holder = hold_lock(path)
    try:
        with pytest.raises(RunLockError) as info:
            RunLock(path).acquire()
        message = str(info.value)
        assert f"pid {holder.pid} on " in message and str(path) in message and ", started " in message
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    assert path.exists()  # a killed holder leaves its file, but the kernel dropped its lock
    with RunLock(path) as lock:
        assert lock.held and json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockError):
            RunLock(path).acquire()
    assert not path.exists()  # removed on release
    with RunLock(path):  # and free again
        pass


def fake_context(project: Path, kg_name: str) -> SimpleNamespace:
    return SimpleNamespace(project_path=project, config_loader={"globals": {"kg_name": kg_name}})


def test_hooks_take_and_release_the_locks(tmp_path) -> None:
    first, second, other = RunLockHook(), RunLockHook(), RunLockHook()
    for hook, kg in ((first, "umls"), (second, "umls"), (other, "fb")):
        hook.after_context_created(fake_context(tmp_path, kg))
    first.before_pipeline_run({"project_path": str(tmp_path)})
    with pytest.raises(RunLockError, match=f"pid {os.getpid()} on "):
        second.before_pipeline_run({"project_path": str(tmp_path)})
    other.before_pipeline_run({"project_path": str(tmp_path)})  # another KG is not blocked
    first.on_pipeline_error()
    second.before_pipeline_run({"project_path": str(tmp_path)})  # free after the failed run
    second.after_pipeline_run()
    other.after_pipeline_run()
    assert not list((tmp_path / "data").iterdir())

    start = SessionStartLock()
    start.after_context_created(fake_context(tmp_path, "umls"))
    with pytest.raises(RunLockError):  # held from the first to the last after_context_created
        RunLock(tmp_path / "data" / STARTUP_LOCK_NAME).acquire()
    start.release_hook.after_context_created()
    with RunLock(tmp_path / "data" / STARTUP_LOCK_NAME):
        pass


def test_kedro_run_on_a_locked_kg_fails_fast_and_leaves_nothing(tmp_path) -> None:
    project = ScratchProject.create(tmp_path)
    holder = hold_lock(lock_path(project.path, "umls"))
    try:
        done = project.run("--pipelines=ingestion")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert done.returncode != 0
    assert f"RunLockError: another kedro run is writing this KG's data (pid {holder.pid} on " in done.stderr
    assert [p.name for p in project.output_files()] == [".umls.run.lock"]  # the holder's, nothing else
    if (project.path / "mlflow.db").exists():  # refused before kedro-mlflow opened a run
        mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
        assert mlflow.search_runs(search_all_experiments=True).empty


def test_runs_on_two_kgs_at_the_same_time_both_succeed_on_separate_mlflow_runs(tmp_path) -> None:
    # (two runs on one KG: the second is refused, as above, by whichever process holds the lock)
    project = ScratchProject.create(tmp_path)
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "COLUMNS": "500", "OMP_NUM_THREADS": "1"}
    other = {**env, "RQKG_KG_DIR": str(umls_dir()), "RQKG_KG_NAME": "umls_again"}
    command = [sys.executable, "-m", "kedro", "run", "--pipelines=ingestion"]
    # both start on a fresh project: they also race to create mlflow.db (serialised by SessionStartLock)
    processes = [
        subprocess.Popen(command, cwd=project.path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for e in (env, other)
    ]
    results = [(p.wait(timeout=600), p.communicate()[1]) for p in processes]
    for code, stderr in results:
        assert code == 0, stderr[-3000:]

    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["rq_kg_pipeline"])
    assert len(runs) == 2 and runs["run_id"].is_unique and set(runs["status"]) == {"FINISHED"}
    for kg in ("umls", "umls_again"):  # each KG's artifacts are complete and its own
        stats = json.loads((project.path / f"data/08_reporting/{kg}/kg_statistics.json").read_text())
        assert stats["num_train_triples"] == 5216
        assert len(pd.read_parquet(project.path / f"data/03_primary/{kg}/train_ids.parquet")) == 5216
    assert [p.name for p in (project.path / "data").iterdir() if p.is_file()] == [], "every lock released"
