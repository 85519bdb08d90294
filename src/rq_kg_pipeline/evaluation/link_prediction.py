"""Filtered link prediction of a trained RQGCN from its codes alone, and from the continuous encoder.

Codes only (the headline): the query entity and every candidate are vectors decoded from
their codes (``entity_vectors_from_codes``), nothing else about an entity is used; this is
what an LLM reading the codes gets. Continuous (reference): the unquantized latent sequence
of the query and the GCN's entity table as candidates. Shuffled codes (a control): the codes
permuted across entities must score near random.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex, ScoreFn, filtered_ranks, rank_metrics
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models.rqgcn import RQGCN


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _scorer(model: RQGCN, queries: torch.Tensor, relations: torch.Tensor, candidates: torch.Tensor) -> ScoreFn:
    """ScoreFn over precomputed tables; ids may come on any device."""
    device = candidates.device
    return lambda heads, rels: model.score(queries[heads.to(device)], rels.to(device), relations, candidates).float()


@torch.no_grad()
def codes_only_score_fn(model: RQGCN, graph: KGGraph, codes: torch.Tensor) -> ScoreFn:
    """Scores [B, M] of (head, rel) queries where entities exist only as their codes [M, L, Q]."""
    model.eval()
    device = model_device(model)
    entities = model.entity_vectors_from_codes(codes.to(device).long())  # [M, D]
    _, relations = model.encode(graph.to(device))  # [2R, D]
    return _scorer(model, entities, relations, entities)


@torch.no_grad()
def continuous_score_fn(model: RQGCN, graph: KGGraph) -> ScoreFn:
    """Scores [B, M] from the unquantized path: aggregate(latent_sequence(x_h)) against the GCN table."""
    model.eval()
    entities, relations = model.encode(graph.to(model_device(model)))  # [M, D], [2R, D]
    queries = model.continuous_query_vectors(entities)  # [M, D]
    return _scorer(model, queries, relations, entities)


def evaluate_splits(
    model: RQGCN,
    graph: KGGraph,
    codes: torch.Tensor,
    splits: Mapping[str, torch.Tensor],
    filter_index: FilterIndex,
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """``{arm}/{split}/{metric}`` for arms codes_only, continuous, shuffled_codes (test only)."""
    shuffled = codes[torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(seed))]
    arms = {
        "codes_only": (codes_only_score_fn(model, graph, codes), splits),
        "continuous": (continuous_score_fn(model, graph), splits),
        "shuffled_codes": (codes_only_score_fn(model, graph, shuffled), {"test": splits["test"]}),
    }
    results: dict[str, float] = {}
    for arm, (score_fn, arm_splits) in arms.items():
        for split, triples in arm_splits.items():
            ranks = filtered_ranks(score_fn, triples, filter_index, graph.num_relations, batch_size, progress)
            results.update({f"{arm}/{split}/{k}": v for k, v in rank_metrics(ranks).items()})
    return results
