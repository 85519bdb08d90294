"""Thin adapters from catalog objects to ``rq_kg_pipeline.training`` and ``models``."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.kg.indexing import id_triples
from rq_kg_pipeline.models.persistence import model_artifact
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.params import DistributedParams, ModelParams, TextEmbeddingParams, auto_num_quantizers
from rq_kg_pipeline.pipelines.tracking import EpochMetricsLogger, git_commit, log_metrics, set_tags
from rq_kg_pipeline.semantics.cache import cached_text_embeddings, no_text_embeddings
from rq_kg_pipeline.semantics.entity_text import entity_texts
from rq_kg_pipeline.semantics.loss import TextTargets
from rq_kg_pipeline.training.config import TrainConfig
from rq_kg_pipeline.training.checkpoint import latest_checkpoint
from rq_kg_pipeline.training.distributed import DistributedTrainingError, launch
from rq_kg_pipeline.training.loop import NonFiniteLossError, fit

log = logging.getLogger(__name__)


def entity_text_embeddings(
    entity_vocab: pd.DataFrame, entity_names: pd.DataFrame, params: TextEmbeddingParams, fit_config: TrainConfig
) -> dict[str, Any]:
    """Text embeddings of every entity (names, or labels when configured), reused from the cache
    when the model and the texts are unchanged; a KG without names, or ``semantic_weight`` 0,
    gets the "no embeddings" artifact (nothing is loaded or computed)."""
    labels = entity_vocab.sort_values("id")["label"].astype(str).tolist()
    if fit_config.semantic_weight == 0:
        log.info("entity_text_embeddings: training.fit.semantic_weight is 0: no embeddings needed, none computed")
        return no_text_embeddings(labels, "training.fit.semantic_weight is 0")
    texts = entity_texts(entity_vocab, entity_names, params.without_names)
    if texts is None:
        log.info(
            "entity_text_embeddings: the KG has no names file: no embeddings, training runs without the semantic "
            "term (training.text_embeddings.without_names=labels embeds the entity labels instead)"
        )
        return no_text_embeddings(labels, "the KG has no names file")
    payload, reused = cached_text_embeddings(texts, params.model, params.batch_size, params.device, params.cache_dir)
    log.info(
        "entity_text_embeddings: %s, %s x %s (%s)",
        "reused" if reused else "computed",
        *payload["embeddings"].shape,
        payload["status"],
    )
    return payload


def resolve_model_config(params: ModelParams, num_entities: int) -> dict[str, Any]:
    """Constructor arguments of RQGCN, with ``num_quantizers: auto`` chosen by KG size."""
    config = params.model_dump()
    if config["num_quantizers"] == "auto":
        config["num_quantizers"] = auto_num_quantizers(num_entities)
        log.info("num_quantizers auto -> %d for %d entities", config["num_quantizers"], num_entities)
    config["conve_dropout"] = list(config["conve_dropout"])
    return config


def _run_key(
    model_config: dict, fit_config: TrainConfig, train: torch.Tensor, valid: torch.Tensor, text_key: str | None = None
) -> str:
    """Checkpoints of one (data, model, fit) combination live in their own folder, so a rerun with
    other settings starts fresh while a rerun of the same command resumes. ``epochs`` and
    ``patience`` are left out: raising them continues a run that finished its epochs instead of
    restarting it (a run that stopped early stays stopped), and so are ``cuda_graphs`` and
    ``torch_compile``, which change how a step runs, not what it computes, and
    ``checkpoint_min_seconds``, which changes when checkpoints are written (keys stay as before it
    existed). A run without the semantic term keys exactly as before the term existed; one with it
    adds the text embeddings' key."""
    how_not_what = ("epochs", "patience", "cuda_graphs", "torch_compile", "checkpoint_min_seconds")
    fit_settings = {k: v for k, v in fit_config.to_dict().items() if k not in how_not_what}
    if not fit_settings.get("semantic_weight"):
        fit_settings.pop("semantic_weight", None)
    digest = hashlib.sha256(json.dumps([model_config, fit_settings], sort_keys=True).encode())
    digest.update(train.numpy().tobytes())
    digest.update(valid.numpy().tobytes())
    if text_key is not None:
        digest.update(text_key.encode())
    return digest.hexdigest()[:16]


def semantic_setup(
    fit_config: TrainConfig, text_embeddings: dict[str, Any] | None, num_entities: int
) -> tuple[TrainConfig, TextTargets | None]:
    """The fit settings and text targets a run actually uses: without embeddings (a KG without
    names) the semantic term is off, said once in the log; with semantic_weight 0 no targets."""
    targets = TextTargets.from_payload(text_embeddings)
    if fit_config.semantic_weight == 0:
        return fit_config, None
    if targets is None:
        why = text_embeddings["status"] if text_embeddings is not None else "none given"
        log.info("semantic_weight %g but %s: training without the semantic term", fit_config.semantic_weight, why)
        return replace(fit_config, semantic_weight=0.0), None
    if targets.num_entities != num_entities:
        raise ValueError(
            f"text_embeddings cover {targets.num_entities} entities, the graph {num_entities}: rerun entity_text_embeddings"
        )
    return fit_config, targets


def train_model(
    graph: KGGraph,
    train_ids: pd.DataFrame,
    valid_ids: pd.DataFrame,
    test_ids: pd.DataFrame,
    model_params: ModelParams,
    fit_config: TrainConfig,
    checkpoint_root: str,
    dataset_name: str,
    text_embeddings: dict[str, Any] | None = None,
    distributed: DistributedParams = DistributedParams(),
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train (or resume) the RQGCN, in ``distributed.nproc_per_node`` data-parallel workers when
    more than one; returns the best model as an artifact dict and the per-epoch history."""
    return train_and_track(
        graph, train_ids, valid_ids, test_ids, model_params, fit_config, checkpoint_root, dataset_name, "train.", "",
        text_embeddings=text_embeddings, nproc_per_node=distributed.nproc_per_node,
    )  # fmt: skip


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
    text_embeddings: dict[str, Any] | None = None,
    nproc_per_node: int = 1,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """:func:`train_model` with its MLflow metric and tag names prefixed (arms of a comparison share a run)."""
    train, valid, test = id_triples(train_ids), id_triples(valid_ids), id_triples(test_ids)
    model_config = resolve_model_config(model_params, graph.num_entities)
    fit_config, text = semantic_setup(fit_config, text_embeddings, graph.num_entities)
    if text is not None:
        model_config["semantic_dim"] = text.dim
    torch.manual_seed(fit_config.seed)  # initial weights depend on the seed, not on what ran before
    model = RQGCN(graph.num_entities, graph.num_relations, **model_config)
    filter_index = FilterIndex.build([train, valid, test], graph.num_entities, graph.num_relations)
    text_key = text_embeddings.get("key") if text is not None else None
    run_dir = Path(checkpoint_root) / _run_key(model_config, fit_config, train, valid, text_key)
    tags = {"num_quantizers": model_config["num_quantizers"], "num_code": model_config["num_code"], "seq_len": model_config["seq_len"]}
    tags.update({"backend": model_config["backend"], "device": str(fit_config.resolve_device()), "checkpoint_dir": str(run_dir)})
    tags["semantic_weight"] = fit_config.semantic_weight
    tags["processes"] = nproc_per_node
    set_tags({"dataset": dataset_name, "git_commit": git_commit(), **{tag_prefix + k: v for k, v in tags.items()}})
    args = (model, graph, train, valid, filter_index, fit_config)
    kwargs = dict(checkpoint_dir=run_dir, on_epoch_end=EpochMetricsLogger(metric_prefix), model_config=model_config, text=text)
    try:
        if nproc_per_node > 1:  # rank 0 logs each epoch to this run; its result comes back here
            log.info("training in %d data-parallel workers (global batch %d)", nproc_per_node, fit_config.batch_size)
            result = launch(nproc_per_node, fit_config.resolve_device().type, fit, *args, **kwargs)
        else:
            result = fit(*args, **kwargs)
    except (NonFiniteLossError, DistributedTrainingError) as error:  # say what is kept; the run then fails
        last = latest_checkpoint(run_dir)
        kept = f"the last good checkpoint {last} is kept" if last else f"no checkpoint was written yet in {run_dir}"
        raise type(error)(f"training stopped: {error}; {kept}") from error
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
