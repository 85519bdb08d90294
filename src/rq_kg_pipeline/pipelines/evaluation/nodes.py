"""Thin adapters from catalog objects to ``rq_kg_pipeline.evaluation``."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from rq_kg_pipeline.codes.entity_codes import EntityCodes, check_codes_match
from rq_kg_pipeline.evaluation.link_prediction import evaluate_splits
from rq_kg_pipeline.evaluation.plots import (
    plot_code_projection,
    plot_code_usage,
    plot_level_losses,
    plot_reconstruction_by_level,
)
from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.kg.indexing import id_triples
from rq_kg_pipeline.models.persistence import load_model
from rq_kg_pipeline.params import EvaluationParams
from rq_kg_pipeline.pipelines.tracking import as_metrics_dataset


def evaluate_link_prediction(
    model_checkpoint: dict[str, Any],
    graph: KGGraph,
    entity_codes: EntityCodes,
    train_ids: pd.DataFrame,
    valid_ids: pd.DataFrame,
    test_ids: pd.DataFrame,
    params: EvaluationParams,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Filtered ranking on valid and test (both directions, filtered by all splits)."""
    check_codes_match(entity_codes, model_checkpoint["state_dict"])
    model = load_model(model_checkpoint)
    splits = {"train": id_triples(train_ids), "valid": id_triples(valid_ids), "test": id_triples(test_ids)}
    filter_index = FilterIndex.build(list(splits.values()), graph.num_entities, graph.num_relations)
    results = evaluate_splits(
        model,
        graph,
        entity_codes.codes,
        {"valid": splits["valid"], "test": splits["test"]},
        filter_index,
        params.batch_size,
        params.seed,
        progress=True,
    )
    report = {
        "convention": "filtered ranking over all entities, both directions, ties get the mean rank",
        "checkpoint_sha256": entity_codes.meta.get("checkpoint_sha256"),
        "metrics": results,
    }
    return report, as_metrics_dataset({key.replace("/", "."): value for key, value in results.items()})


def plot_codes(
    training_history: pd.DataFrame, entity_codes: EntityCodes, code_statistics: dict[str, Any], graph: KGGraph
) -> tuple[Figure, Figure, Figure, Figure]:
    """Per-level loss curves, code usage, reconstruction error by level, 2-D map of code embeddings."""
    levels = entity_codes.num_quantizers
    mse = [code_statistics[f"reconstruction_mse_l{q + 1}"] for q in range(levels)]
    degree = graph.in_degrees().float()
    bucket = torch.bucketize(degree.log2().clamp(min=0), torch.arange(1.0, 12.0))  # log2-degree buckets
    return (
        plot_level_losses(training_history),
        plot_code_usage(entity_codes.codes, entity_codes.num_code),
        plot_reconstruction_by_level(mse),
        plot_code_projection(entity_codes.embeddings, bucket, "log2(degree) bucket"),
    )
