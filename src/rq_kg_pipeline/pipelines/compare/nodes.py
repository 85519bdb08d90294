"""Thin adapters: train one arm with its overrides, then tabulate the arms."""

from __future__ import annotations

from typing import Any

import pandas as pd

from rq_kg_pipeline.evaluation.comparison import comparison_markdown, comparison_row, comparison_table
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.params import CompareArm, ModelParams
from rq_kg_pipeline.pipelines.training.nodes import train_and_track
from rq_kg_pipeline.training.config import TrainConfig


def train_arm(arm_name: str):
    """Node function training the arm ``arm_name``: ``training`` settings with the arm's overrides."""

    def train(
        graph: KGGraph,
        train_ids: pd.DataFrame,
        valid_ids: pd.DataFrame,
        test_ids: pd.DataFrame,
        model_params: ModelParams,
        arm: CompareArm,
        fit_config: TrainConfig,
        checkpoint_root: str,
        dataset_name: str,
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        params = arm.apply(model_params)
        prefix = f"compare.{arm_name}."
        return train_and_track(
            graph, train_ids, valid_ids, test_ids, params, fit_config, checkpoint_root, dataset_name, prefix, prefix
        )

    train.__name__ = f"train_{arm_name}"
    return train


def compare_arms(dataset_name: str, **reports: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """``reports`` holds ``{arm}_link_prediction``, ``{arm}_code_statistics`` and ``{arm}_model`` per arm."""
    arms = sorted({key.rsplit("_", 2)[0] for key in reports if key.endswith("_link_prediction")})
    rows = {
        arm: comparison_row(
            reports[f"{arm}_link_prediction"]["metrics"],
            reports[f"{arm}_code_statistics"],
            reports[f"{arm}_model"]["metadata"]["train_seconds"],
        )
        for arm in arms
    }
    table = comparison_table(rows)
    return table, comparison_markdown(table, f"{dataset_name}: VQ vs RQ")
