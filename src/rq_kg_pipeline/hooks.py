"""Project hooks: kedro-mlflow with readable parameters, run names and tags, the trained model,
per-node cost, and one summary line per pipeline stage at the end of a run."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import torch
from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog
from kedro.pipeline import Node
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
from pydantic import BaseModel

from rq_kg_pipeline.pipelines import summary
from rq_kg_pipeline.pipelines.mlflow_model import log_code_decoder
from rq_kg_pipeline.pipelines.tracking import git_commit, log_metrics, set_tags

MODEL = "model_checkpoint"  # the catalog name of the trained model (compare arms have their own)
log = logging.getLogger("rq_kg_pipeline.summary")


def as_plain(value: Any) -> Any:
    """A pydantic model or dataclass as a plain dict (recursively); anything else unchanged."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


class ReadableMlflowHook(MlflowHook):
    """kedro-mlflow's hook, handed typed parameter blocks (pydantic models, dataclasses) as plain
    dicts, which it flattens (``conf/base/mlflow.yml``): one MLflow parameter per leaf under its
    dotted key (``training.model.num_quantizers``) instead of one opaque string per block.
    Registered in settings.py in place of the plugin's own instance (DISABLE_HOOKS_FOR_PLUGINS)."""

    @hook_impl
    def before_node_run(self, node: Node, catalog: DataCatalog, inputs: dict[str, Any], is_async: bool) -> None:
        plain = {name: as_plain(value) if name.startswith("params:") else value for name, value in inputs.items()}
        super().before_node_run(node=node, catalog=catalog, inputs=plain, is_async=is_async)


def run_name(dataset: str, pipelines: list[str], model_config: dict[str, Any] | None) -> str:
    """``umls Q2 K64 L4`` for a run that trains or reads a model, with the pipelines when not the default."""
    parts = [dataset]
    if model_config is not None:
        parts.append(f"Q{model_config['num_quantizers']} K{model_config['num_code']} L{model_config['seq_len']}")
    if pipelines != ["__default__"]:
        parts.append("+".join(pipelines))
    return " ".join(parts)


class MlflowRunLabels:
    """Names each MLflow run after its data and model (``umls Q2 K64 L4``) and tags it with the
    dataset, the git commit, and Q/K/L/backend of the model the run trained or used."""

    def __init__(self) -> None:
        self._dataset = "unknown"
        self._pipelines: list[str] = ["__default__"]
        self._tagged = False
        self._labelled_model = False

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], catalog: DataCatalog) -> None:
        names = run_params.get("pipeline_names") or run_params.get("pipeline_name") or ["__default__"]
        self._pipelines = [names] if isinstance(names, str) else list(names)
        self._dataset = str(catalog.load("params:dataset_name")) if "params:dataset_name" in catalog else "unknown"
        self._tagged = self._labelled_model = False

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        if not self._tagged:
            self._tagged = True
            set_tags({"dataset": self._dataset, "git_commit": git_commit()})
            mlflow.set_tag("mlflow.runName", run_name(self._dataset, self._pipelines, None))
        if MODEL in inputs:
            self._label(inputs[MODEL])

    @hook_impl
    def after_node_run(self, outputs: dict[str, Any]) -> None:
        if MODEL in outputs and mlflow.active_run() is not None:
            self._label(outputs[MODEL])

    def _label(self, artifact: dict[str, Any]) -> None:
        if self._labelled_model:
            return
        self._labelled_model = True
        config = artifact["model_config"]
        set_tags({k: config[k] for k in ("num_quantizers", "num_code", "seq_len", "backend")})
        mlflow.set_tag("mlflow.runName", run_name(self._dataset, self._pipelines, config))


class MlflowTrainedModel:
    """Logs the freshly trained model as an MLflow PyTorch model (``code_decoder``: codes -> entity
    vectors, a pickle-free ``torch.export`` archive with a signature); see ``pipelines.mlflow_model``."""

    @hook_impl
    def after_node_run(self, outputs: dict[str, Any]) -> None:
        if MODEL in outputs:
            log_code_decoder(outputs[MODEL])


def _peak_rss_mb() -> float | None:
    """The process's peak resident set size so far (a high-water mark), in MiB; None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def metric_key(name: str) -> str:
    """A node name as an MLflow metric-name part (letters, digits, ``_-./`` and spaces are allowed)."""
    return re.sub(r"[^\w\-./ ]", "_", name)


class NodeCost:
    """Per node, MLflow metrics ``node_seconds.<node>`` (wall time), ``peak_rss_mb.<node>`` (process
    peak RSS after the node) and, when CUDA is in use, ``cuda_max_allocated_mb.<node>`` (peak
    allocated during the node: the counter is reset before each node); totals at the end."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._run_started = time.perf_counter()
        self.nodes_run = 0
        self.run_seconds = 0.0
        self.peak_rss_mb: float | None = None

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._run_started = time.perf_counter()
        self.nodes_run = 0

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        self.nodes_run += 1
        key = metric_key(node.name)
        metrics = {f"node_seconds.{key}": seconds}
        peak = _peak_rss_mb()
        if peak is not None:
            metrics[f"peak_rss_mb.{key}"] = peak
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            metrics[f"cuda_max_allocated_mb.{key}"] = torch.cuda.max_memory_allocated() / 2**20
        log_metrics(metrics)

    @hook_impl(tryfirst=True)  # before kedro-mlflow's after_pipeline_run ends the MLflow run
    def after_pipeline_run(self) -> None:
        self.run_seconds = time.perf_counter() - self._run_started
        self.peak_rss_mb = _peak_rss_mb()
        peak = {"peak_rss_mb": self.peak_rss_mb} if self.peak_rss_mb is not None else {}
        log_metrics({"run_seconds": self.run_seconds, **peak})


def dataset_location(catalog: DataCatalog, name: str) -> str:
    """Where a catalog entry lives on disk (relative to the working directory when inside it)."""
    try:
        described = catalog.get(name)._describe()  # kedro-mlflow's artifact wrapper describes its file dataset
    except Exception:  # noqa: BLE001 - a summary must never fail a finished run
        return name
    location = described.get("filepath") or described.get("path")
    if location is None:
        return name
    path = Path(str(location))
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class PipelineSummary:
    """Logs one line per stage that ran (ingestion, training, extraction, evaluation, gen_llm_data,
    compare) after the run, from the outputs the stage produced, with where they were written;
    then the run's cost from ``cost`` (a :class:`NodeCost` registered as a hook too)."""

    def __init__(self, cost: NodeCost | None = None) -> None:
        self._cost = cost
        self._catalog: DataCatalog | None = None
        self._seen: dict[str, Any] = {}

    @hook_impl
    def before_pipeline_run(self, catalog: DataCatalog) -> None:
        self._catalog = catalog
        self._seen = {}

    @hook_impl
    def after_node_run(self, node: Node, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        for name in ("kg_statistics", MODEL, "code_statistics", "link_prediction_report", "comparison_table"):
            if name in outputs:
                self._seen[name] = outputs[name]
        if "entity_codes" in outputs:
            self._seen["codes_file"] = f"{outputs['entity_codes'].stem}.pt"  # the seed-named codes file
        if "llm_dataset_card" in outputs:  # its inputs are the written JSONL files
            self._seen["jsonl"] = {n.removesuffix("_jsonl"): f for n, f in inputs.items() if n.endswith("_jsonl")}

    @hook_impl
    def after_pipeline_run(self) -> None:
        for line in self.lines():
            log.info(line)
        if self._cost is not None:
            log.info(summary.cost_line(self._cost.nodes_run, self._cost.run_seconds, self._cost.peak_rss_mb))

    def lines(self) -> list[str]:
        """The summary lines of what ran, in pipeline order."""
        seen, where = self._seen, self._where
        lines = []
        if "kg_statistics" in seen:
            lines.append(summary.ingestion_line(seen["kg_statistics"], where("kg_graph")))
        if MODEL in seen:
            lines.append(summary.training_line(seen[MODEL], where(MODEL)))
        if "code_statistics" in seen:
            codes_file = str(Path(where("entity_codes")) / seen["codes_file"]) if "codes_file" in seen else where("entity_codes")
            lines.append(summary.extraction_line(seen["code_statistics"], codes_file))
        if "link_prediction_report" in seen:
            lines.append(summary.evaluation_line(seen["link_prediction_report"], where("link_prediction_report")))
        if "jsonl" in seen:
            counts = {key: handle.count() for key, handle in seen["jsonl"].items()}
            lines.append(summary.gen_llm_data_line(counts, str(Path(where("llm_dataset_card")).parent)))
        if "comparison_table" in seen:
            lines.append(summary.compare_line(seen["comparison_table"], where("comparison_report")))
        return lines

    def _where(self, name: str) -> str:
        return dataset_location(self._catalog, name) if self._catalog is not None else name
