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


# Rows per call of the model's scorer on CPU: ConvE's convolution activations of 64 queries
# ([64, 200, 14, 14] float32, 10 MiB on FB15k-237's recipe) stay near the cores while the fc
# weight (31 MiB) is still read once per 64 rows; measured 1.5x faster than 256 rows per call
# (and than 16 or 32) on 2 cores. Blocks of 64 to 127 rows (the remainder joins the last
# block), so no block takes a small-matrix kernel path: each row's scores are those of one
# big call (checked bit for bit on FB15k-237's validation pass).
CPU_SCORE_ROWS = 64


def _row_blocks(n: int, rows: int) -> list[tuple[int, int]]:
    """[start, stop) blocks of ``rows`` rows covering n, the remainder merged into the last block."""
    starts = list(range(0, n, rows))
    if len(starts) > 1 and n - starts[-1] < rows:
        starts.pop()
    return [(a, b) for a, b in zip(starts, starts[1:] + [n])]


def _scorer(model: RQGCN, queries: torch.Tensor, relations: torch.Tensor, candidates: torch.Tensor) -> ScoreFn:
    """ScoreFn over precomputed tables; ids may come on any device. On CPU without autograd
    the queries are scored in cache-sized row blocks (:data:`CPU_SCORE_ROWS`)."""
    device = candidates.device

    def score(heads: torch.Tensor, rels: torch.Tensor) -> torch.Tensor:
        heads, rels = heads.to(device), rels.to(device)
        if device.type != "cpu" or heads.numel() < 2 * CPU_SCORE_ROWS or torch.is_grad_enabled():
            return model.score(queries[heads], rels, relations, candidates).float()
        out = torch.empty(heads.numel(), candidates.shape[0], dtype=torch.float32)  # [B, M]
        for start, stop in _row_blocks(heads.numel(), CPU_SCORE_ROWS):
            out[start:stop] = model.score(queries[heads[start:stop]], rels[start:stop], relations, candidates)
        return out

    return score


@torch.no_grad()
def codes_only_score_fn(model: RQGCN, graph: KGGraph, codes: torch.Tensor, relations: torch.Tensor | None = None) -> ScoreFn:
    """Scores [B, M] of (head, rel) queries where entities exist only as their codes [M, L, Q].

    ``relations`` [2R, D]: the relation table of the model's current weights when the caller
    has it (``RQGCN.codes_and_relations`` gives codes and table from one encode); None encodes
    the graph for it.
    """
    model.eval()
    entities = model.entity_vectors_from_codes(codes.to(model_device(model)).long())  # [M, D]
    return _scorer(model, entities, relation_table(model, graph, relations), entities)


def relation_table(model: RQGCN, graph: KGGraph, relations: torch.Tensor | None) -> torch.Tensor:
    """``relations`` [2R, D] checked, or (None) the table of one encode of ``graph``."""
    if relations is None:
        _, relations = model.encode(graph.to(model_device(model)))  # [2R, D]
    elif relations.shape != (2 * model.num_relations, model.latent_dim):
        raise ValueError(f"relations must be [2R, D] = [{2 * model.num_relations}, {model.latent_dim}], got {tuple(relations.shape)}")
    return relations


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
