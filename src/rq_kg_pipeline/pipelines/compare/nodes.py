"""Thin adapters: train one arm with its overrides, measure its codes against the entity texts,
then tabulate the arms."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from rq_kg_pipeline.codes.entity_codes import EntityCodes, check_codes_match
from rq_kg_pipeline.evaluation.comparison import comparison_markdown, comparison_row, comparison_table
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models.persistence import load_model
from rq_kg_pipeline.params import CompareArm, ModelParams
from rq_kg_pipeline.semantics.alignment import neighbour_agreement
from rq_kg_pipeline.semantics.loss import TextTargets
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
        text_embeddings: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        params = arm.apply(model_params)
        prefix = f"compare.{arm_name}."
        return train_and_track(
            graph, train_ids, valid_ids, test_ids, params, arm.apply_fit(fit_config), checkpoint_root, dataset_name,
            prefix, prefix, text_embeddings=text_embeddings,
        )  # fmt: skip

    train.__name__ = f"train_{arm_name}"
    return train


def text_alignment(model_checkpoint: dict[str, Any], entity_codes: EntityCodes, text_embeddings: dict[str, Any]) -> dict[str, Any]:
    """Neighbour agreement between entity vectors decoded from codes alone and the entity text
    embeddings (see :mod:`rq_kg_pipeline.semantics.alignment`); empty without embeddings."""
    text = TextTargets.from_payload(text_embeddings)
    if text is None:
        return {"status": text_embeddings["status"]}
    check_codes_match(entity_codes, model_checkpoint["state_dict"])
    model = load_model(model_checkpoint, device="cpu")
    with torch.no_grad():
        vectors = model.entity_vectors_from_codes(entity_codes.codes.long())  # [M, D]
    k = min(10, int(text.mask.sum()) - 1)
    return neighbour_agreement(vectors, text.embeddings, text.mask, k=k)


def compare_arms(dataset_name: str, **reports: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """``reports`` holds ``{arm}_link_prediction``, ``{arm}_code_statistics``, ``{arm}_model`` and
    ``{arm}_text_alignment`` per arm."""
    arms = [key.removesuffix("_link_prediction") for key in reports if key.endswith("_link_prediction")]
    rows = {
        arm: comparison_row(
            reports[f"{arm}_link_prediction"]["metrics"],
            reports[f"{arm}_code_statistics"],
            reports[f"{arm}_model"]["metadata"]["train_seconds"],
            fit_config=reports[f"{arm}_model"]["metadata"].get("fit_config", {}),
            text_alignment=reports.get(f"{arm}_text_alignment"),
        )
        for arm in arms
    }
    table = comparison_table(rows)
    return table, comparison_markdown(table, f"{dataset_name}: VQ vs RQ, with and without the semantic term")
