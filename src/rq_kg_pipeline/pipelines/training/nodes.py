"""Thin adapters from catalog objects to ``rq_kg_pipeline.training`` and ``models``."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.kg.indexing import id_triples
from rq_kg_pipeline.models.persistence import model_artifact
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.params import ModelParams, auto_num_quantizers
from rq_kg_pipeline.pipelines.tracking import git_commit, log_metrics, set_tags
from rq_kg_pipeline.training.config import TrainConfig
from rq_kg_pipeline.training.loop import fit

log = logging.getLogger(__name__)
def resolve_model_config(params: ModelParams, num_entities: int) -> dict[str, Any]:
    """Constructor arguments of RQGCN, with ``num_quantizers: auto`` chosen by KG size."""
    config = params.model_dump()
    if config["num_quantizers"] == "auto":
        config["num_quantizers"] = auto_num_quantizers(num_entities)
        log.info("num_quantizers auto -> %d for %d entities", config["num_quantizers"], num_entities)
    config["conve_dropout"] = list(config["conve_dropout"])
    return config


def _run_key(model_config: dict, fit_config: TrainConfig, train: torch.Tensor, valid: torch.Tensor) -> str:
    """Checkpoints of one (data, model, fit) combination live in their own folder, so a rerun with
    other settings starts fresh while a rerun of the same command resumes. ``epochs`` and
    ``patience`` are left out: raising them continues a run that finished its epochs instead of
    restarting it (a run that stopped early stays stopped)."""
    fit_settings = {k: v for k, v in fit_config.to_dict().items() if k not in ("epochs", "patience")}
    digest = hashlib.sha256(json.dumps([model_config, fit_settings], sort_keys=True).encode())
    digest.update(train.numpy().tobytes())
    digest.update(valid.numpy().tobytes())
    return digest.hexdigest()[:16]


def train_model(
    graph: KGGraph,
    train_ids: pd.DataFrame,
    valid_ids: pd.DataFrame,
    test_ids: pd.DataFrame,
    model_params: ModelParams,
    fit_config: TrainConfig,
    checkpoint_root: str,
    dataset_name: str,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train (or resume) the RQGCN; returns the best model as an artifact dict and the per-epoch history."""
    return train_and_track(
        graph, train_ids, valid_ids, test_ids, model_params, fit_config, checkpoint_root, dataset_name, "train.", ""
    )


def train_and_track(
    graph: KGGraph,
    train_ids: pd.DataFrame,
    valid_ids: pd.DataFrame,
    test_ids: pd.DataFrame,
    model_params: ModelParams,
    fit_config: TrainConfig,
    checkpoint_root: str,
    dataset_name: str,
    metric_prefix: str,
    tag_prefix: str,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """:func:`train_model` with its MLflow metric and tag names prefixed (arms of a comparison share a run)."""
    train, valid, test = id_triples(train_ids), id_triples(valid_ids), id_triples(test_ids)
    model_config = resolve_model_config(model_params, graph.num_entities)
    torch.manual_seed(fit_config.seed)  # initial weights depend on the seed, not on what ran before
    model = RQGCN(graph.num_entities, graph.num_relations, **model_config)
    filter_index = FilterIndex.build([train, valid, test], graph.num_entities, graph.num_relations)
    run_dir = Path(checkpoint_root) / _run_key(model_config, fit_config, train, valid)
    tags = {"num_quantizers": model_config["num_quantizers"], "num_code": model_config["num_code"], "seq_len": model_config["seq_len"]}
    tags.update({"backend": model_config["backend"], "device": str(fit_config.resolve_device()), "checkpoint_dir": str(run_dir)})
    set_tags({"dataset": dataset_name, "git_commit": git_commit(), **{tag_prefix + k: v for k, v in tags.items()}})
    result = fit(
        model,
        graph,
        train,
        valid,
        filter_index,
        fit_config,
        checkpoint_dir=run_dir,
        on_epoch_end=lambda epoch, metrics: log_metrics(metrics, step=epoch, prefix=metric_prefix),
        model_config=model_config,
    )
    summary = {"best_epoch": result.best_epoch, "best_valid_mrr": result.best_valid_mrr, "train_seconds": result.train_seconds}
    log_metrics(summary, prefix=metric_prefix)
    artifact = model_artifact(
        model_config,
        graph.num_entities,
        graph.num_relations,
        result.best_state_dict,
        dataset=dataset_name,
        fit_config=fit_config.to_dict(),
        **summary,
    )
    return artifact, pd.DataFrame(result.history)
