"""Thin adapters from catalog objects to ``rq_kg_pipeline.codes``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from rq_kg_pipeline.codes.entity_codes import EntityCodes, state_dict_sha256
from rq_kg_pipeline.codes.extraction import extract_codes
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models.persistence import load_model
from rq_kg_pipeline.params import ExtractionParams
from rq_kg_pipeline.pipelines.tracking import as_metrics_dataset


def extract_entity_codes(
    model_checkpoint: dict[str, Any],
    graph: KGGraph,
    entity_vocab: pd.DataFrame,
    params: ExtractionParams,
    dataset_name: str,
) -> tuple[EntityCodes, dict[str, Any], dict[str, dict[str, float]]]:
    """Codes of all entities with a sidecar tying them to the vocabulary and the checkpoint."""
    model = load_model(model_checkpoint)
    extracted = extract_codes(model, graph, params.batch_size, params.disambiguate)
    meta = {
        "checkpoint_sha256": state_dict_sha256(model_checkpoint["state_dict"]),
        "model_config": model_checkpoint["model_config"],
        "entities": entity_vocab.sort_values("id")["label"].tolist(),
        "num_collided_before_disambiguation": extracted.statistics["num_collided_before_disambiguation"],
    }
    bundle = EntityCodes(extracted.codes, extracted.embeddings, extracted.disambiguation, model.num_code, dataset_name, meta)
    numbers = {k: v for k, v in extracted.statistics.items() if isinstance(v, (int, float))}
    return bundle, extracted.statistics, as_metrics_dataset(numbers)
