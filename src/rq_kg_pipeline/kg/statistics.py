"""Dataset statistics: sizes per split and the training graph's degree distribution."""

from __future__ import annotations

import numpy as np

from rq_kg_pipeline.kg.graph import KGGraph


def kg_statistics(graph: KGGraph, split_sizes: dict[str, int], counts: dict[str, int]) -> dict[str, float | int]:
    """Flat dict of numbers (JSON- and MLflow-friendly) describing the indexed KG."""
    degree = graph.in_degrees().numpy()  # [M] edges per entity, both directions
    stats: dict[str, float | int] = {
        "num_entities": graph.num_entities,
        "num_relations": graph.num_relations,
        "num_edges_with_inverses": graph.num_edges,
        **{f"num_{split}_triples": int(n) for split, n in split_sizes.items()},
        "degree_min": int(degree.min()),
        "degree_median": float(np.median(degree)),
        "degree_mean": float(degree.mean()),
        "degree_p99": float(np.percentile(degree, 99)),
        "degree_max": int(degree.max()),
        "isolated_entities": int((degree == 0).sum()),
    }
    stats.update(counts)
    return stats
