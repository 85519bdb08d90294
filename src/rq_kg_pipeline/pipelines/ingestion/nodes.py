"""Thin adapters from catalog objects to ``rq_kg_pipeline.kg``."""

from __future__ import annotations

import pandas as pd

from rq_kg_pipeline.kg.dgl_import import to_dgl
from rq_kg_pipeline.kg.graph import KGGraph, build_graph
from rq_kg_pipeline.kg.indexing import ID_COLUMNS, id_triples, index_kg
from rq_kg_pipeline.kg.names import select_names
from rq_kg_pipeline.kg.statistics import kg_statistics
from rq_kg_pipeline.params import IngestionParams
from rq_kg_pipeline.pipelines.tracking import as_metrics_dataset

def index_triples(
    raw_train: pd.DataFrame,
    raw_valid: pd.DataFrame,
    raw_test: pd.DataFrame,
    raw_names: pd.DataFrame,
    params: IngestionParams,
) -> tuple:
    """Validate everything first, then map to ids: a bad input stops the run before any output is written."""
    indexed = index_kg({"train": raw_train, "valid": raw_valid, "test": raw_test}, params.unseen_policy)
    names, name_counts = select_names(raw_names, indexed.entities)
    ids = [pd.DataFrame(indexed.splits[s], columns=ID_COLUMNS) for s in ("train", "valid", "test")]
    return (indexed.entities, indexed.relations, *ids, names, {**indexed.counts, **name_counts})


def build_training_graph(train_ids: pd.DataFrame, entity_vocab: pd.DataFrame, relation_vocab: pd.DataFrame) -> KGGraph:
    return build_graph(id_triples(train_ids), len(entity_vocab), len(relation_vocab))


def convert_to_dgl(graph: KGGraph):
    return to_dgl(graph)


def summarise_kg(
    graph: KGGraph,
    train_ids: pd.DataFrame,
    valid_ids: pd.DataFrame,
    test_ids: pd.DataFrame,
    ingestion_counts: dict[str, int],
) -> tuple[dict, dict]:
    """Statistics as a JSON report and as MLflow metrics."""
    sizes = {"train": len(train_ids), "valid": len(valid_ids), "test": len(test_ids)}
    stats = kg_statistics(graph, sizes, ingestion_counts)
    return stats, as_metrics_dataset(stats)
