"""MLflow calls shared by nodes: no-ops when no run is active (e.g. a node called from a notebook)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric


def metric_name(key: str) -> str:
    """MLflow metric names allow letters, digits and _-./ only: hits@10 -> hits_at_10."""
    return key.replace("@", "_at_")


def log_metrics(metrics: Mapping[str, float], step: int | None = None, prefix: str = "") -> None:
    if mlflow.active_run() is not None:
        mlflow.log_metrics({metric_name(f"{prefix}{k}"): float(v) for k, v in metrics.items()}, step=step)


class EpochMetricsLogger:
    """Logs a training epoch's metrics to the MLflow run active when it was made, from this
    process or from a training worker it was sent to (picklable: it carries the run's id and
    tracking URI, not the run). Without an active run at creation it logs nothing."""

    def __init__(self, prefix: str = "") -> None:
        run = mlflow.active_run()
        self.run_id = run.info.run_id if run is not None else None
        self.tracking_uri = mlflow.get_tracking_uri()
        self.prefix = prefix

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.run_id is None:
            return
        timestamp = int(time.time() * 1000)
        logged = [Metric(metric_name(f"{self.prefix}{k}"), float(v), timestamp, epoch) for k, v in metrics.items()]
        MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=logged)


def as_metrics_dataset(values: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The dict form kedro-mlflow's MlflowMetricsHistoryDataset saves (one value at step 0 each)."""
    return {metric_name(k): {"value": float(v), "step": 0} for k, v in values.items()}


def set_tags(tags: Mapping[str, object]) -> None:
    if mlflow.active_run() is not None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_artifacts_up_to(paths: list[Path], max_total_mb: float, artifact_path: str) -> bool:
    """Log files as MLflow artifacts unless together they exceed ``max_total_mb`` (instruction
    sets of a large KG run to gigabytes: copying them into the tracking store helps nobody)."""
    if mlflow.active_run() is None:
        return False
    total_mb = sum(p.stat().st_size for p in paths) / 2**20
    if total_mb > max_total_mb:
        return False
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    return True


def git_commit() -> str:
    """The checkout's commit (with '-dirty' when it has local changes), or 'unknown' outside git."""
    cwd = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
