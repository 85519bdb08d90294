"""Filtered top-k candidates of many link-prediction queries, scoring each distinct (entity, relation) once.

Triples share queries: FB15k-237's 620k train/valid/test queries (both directions) hold 162k
distinct (entity, relation) pairs. A triple's filtered top-k differs from its query's only
through its own target, which filtering keeps. So each distinct query is scored once, its
fully filtered top-k is taken once per filter index, and each triple's target is merged into
that list at its rank. The result equals
:func:`~rq_kg_pipeline.evaluation.ranking.top_k_filtered` with ``keep=targets``: same order,
ties broken by the lower entity id, -1 where fewer than k entities remain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex, ScoreFn, both_direction_queries

NEG_INF = float("-inf")
BLOCK_BYTES = 16 * 2**20  # float32 scores [B, M] ranked at once: in cache, and reused by malloc below its mmap threshold


@dataclass(frozen=True)
class QuerySet:
    """Queries of one split and the filter index its candidate lists are filtered with."""

    entities: torch.Tensor  # [N] query entity
    relations: torch.Tensor  # [N] relation in [0, 2R)
    targets: torch.Tensor  # [N] true answer, kept in its own candidate list
    filter_index: FilterIndex


@torch.no_grad()
def top_k_lowest_id(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Values [B, k] and ids [B, k] of the k best scores per row of scores [B, M], ordered by
    (score desc, id asc); ids are -1 where the score is -inf.

    ``torch.topk`` picks an arbitrary member of a tie; its pick is exact unless the (k+1)-th
    best value equals the k-th (a tie straddles the cut). Only such rows (rare with float
    scores, e.g. rows with fewer than k finite scores) get a stable full sort.
    """
    values, ids = scores.topk(min(k + 1, scores.shape[1]), dim=1)  # [B, k+1], sorted by value
    straddle = values[:, k] == values[:, k - 1] if values.shape[1] > k else torch.zeros(len(values), dtype=torch.bool)
    values, ids = values[:, :k], ids[:, :k]
    if bool(straddle.any()):
        rows = straddle.nonzero().squeeze(1)
        exact = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows], ids[rows] = exact.values[:, :k], exact.indices[:, :k]
    ids, by_id = ids.sort(dim=1)  # ids ascending, so the stable value sort breaks ties by id
    values = values.gather(1, by_id)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    values, ids = values.gather(1, order), ids.gather(1, order)
    return values, ids.masked_fill(values == NEG_INF, -1)


def merge_target(
    base_values: torch.Tensor,
    base_ids: torch.Tensor,
    targets: torch.Tensor,
    target_scores: torch.Tensor,
    target_filtered: torch.Tensor,
    num_entities: int,
) -> torch.Tensor:
    """Candidate ids [N, k]: the fully filtered top-k (base_values/base_ids [N, k], ordered by
    (score desc, id asc)) with each filtered target [N] (score [N]) put back at its rank.

    A target that its filter does not remove (``target_filtered`` False) is already ranked in
    the base list, which is then returned as it is.
    """
    k = base_ids.shape[1]
    comparable = torch.where(base_ids < 0, num_entities, base_ids)  # -1 padding sorts last
    score = target_scores.unsqueeze(1)  # [N, 1]
    before = (base_values > score) | ((base_values == score) & (comparable < targets.unsqueeze(1)))  # [N, k] a prefix
    rank = before.sum(dim=1, keepdim=True)  # [N, 1] where the target goes
    column = torch.arange(k).unsqueeze(0)  # [1, k]
    shifted = torch.cat([base_ids[:, :1], base_ids[:, :-1]], dim=1)  # base_ids[:, j - 1]
    placed = torch.where(column == rank, targets.unsqueeze(1), shifted)
    placed = torch.where(column < rank, base_ids, placed)
    placed = placed.masked_fill((column == rank) & (score == NEG_INF), -1)  # as top_k_filtered reports -inf
    return torch.where(target_filtered.unsqueeze(1), placed, base_ids)


def _check_query_sets(query_sets: Mapping[str, QuerySet], k: int) -> list[FilterIndex]:
    """Validate the query sets and k; return their distinct filter indexes (by identity)."""
    if not query_sets:
        raise ValueError("query_sets must hold at least one query set")
    indexes = list({id(s.filter_index): s.filter_index for s in query_sets.values()}.values())
    num_entities, num_relations = indexes[0].num_entities, indexes[0].num_relations
    if any((f.num_entities, f.num_relations) != (num_entities, num_relations) for f in indexes):
        raise ValueError("every query set's filter_index must cover the same entities and relations")
    if not 1 <= k <= num_entities:
        raise ValueError(f"k must be in [1, num_entities={num_entities}], got {k}")
    for name, qs in query_sets.items():
        shapes = {tuple(t.shape) for t in (qs.entities, qs.relations, qs.targets)}
        if len(shapes) != 1 or qs.entities.ndim != 1:
            raise ValueError(f"query set {name!r}: entities, relations and targets must be 1-D of one length")
        for what, ids, bound in (
            ("entities", qs.entities, num_entities), ("relations", qs.relations, 2 * num_relations),
            ("targets", qs.targets, num_entities),
        ):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= bound):
                raise ValueError(f"query set {name!r}: {what} has ids outside [0, {bound})")
    return indexes


@torch.no_grad()
def top_k_candidates(
    score_fn: ScoreFn, query_sets: Mapping[str, QuerySet], k: int, batch_size: int = 1024
) -> dict[str, torch.Tensor]:
    """Candidate ids [N, k] (int64, CPU) per query set, best first, each set filtered with its
    own index except for its targets; distinct (entity, relation) pairs are scored once for all sets.

    ``score_fn(entities [B], relations [B]) -> [B, M]`` as in evaluation; at most ``batch_size``
    distinct queries are scored at once, and fewer where their scores would exceed ``BLOCK_BYTES``
    (fresh [2048, M] blocks of 119 MB on FB15k-237 are faulted into memory page by page each time).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    indexes = _check_query_sets(query_sets, k)
    slot_of = {id(f): slot for slot, f in enumerate(indexes)}  # by identity: FilterIndex holds tensors
    num_entities, num_relations = indexes[0].num_entities, indexes[0].num_relations
    batch_size = min(batch_size, max(1, BLOCK_BYTES // (4 * num_entities)))
    names = list(query_sets)
    sets = [query_sets[name] for name in names]

    keys = torch.cat([s.entities.long() * (2 * num_relations) + s.relations.long() for s in sets])  # [T]
    targets = torch.cat([s.targets.long() for s in sets])  # [T]
    index_of = torch.cat([torch.full((len(s.targets),), slot_of[id(s.filter_index)]) for s in sets])  # [T]
    distinct, query_of = torch.unique(keys, return_inverse=True)  # [U], [T]
    needs = torch.zeros(len(indexes), distinct.numel(), dtype=torch.bool)  # [F, U] filters each query is ranked under
    needs[index_of, query_of] = True
    # Queries with the same filters side by side, so most batches are ranked under one filter.
    pattern = (needs.long() << torch.arange(len(indexes)).unsqueeze(1)).sum(dim=0)  # [U]
    order = torch.argsort(pattern, stable=True)
    distinct, needs = distinct[order], needs[:, order]
    query_of = torch.argsort(order)[query_of]
    query_ent = torch.div(distinct, 2 * num_relations, rounding_mode="floor")  # [U]
    query_rel = distinct % (2 * num_relations)  # [U]
    base_values = torch.full((len(indexes), distinct.numel(), k), NEG_INF)  # [F, U, k]
    base_ids = torch.full((len(indexes), distinct.numel(), k), -1, dtype=torch.long)  # [F, U, k]
    target_scores = torch.empty(targets.numel())  # [T]
    target_filtered = torch.zeros(targets.numel(), dtype=torch.bool)  # [T]
    by_query = torch.argsort(query_of, stable=True)  # triples grouped by distinct query
    bounds = torch.searchsorted(query_of[by_query], torch.arange(0, distinct.numel() + batch_size, batch_size))

    for batch, start in enumerate(range(0, distinct.numel(), batch_size)):
        stop = min(start + batch_size, distinct.numel())
        ent, rel = query_ent[start:stop], query_rel[start:stop]
        scores = score_fn(ent, rel).float().cpu()  # [B, M]
        if scores.shape != (stop - start, num_entities):
            raise ValueError(f"score_fn must return [B, M] = [{stop - start}, {num_entities}], got {tuple(scores.shape)}")
        triples = by_query[bounds[batch] : bounds[batch + 1]]  # [P] triples whose query is in this batch
        target_scores[triples] = scores[query_of[triples] - start, targets[triples]]
        for f, filter_index in enumerate(indexes):
            ranked = needs[f, start:stop].nonzero().squeeze(1)  # [Bf] rows ranked under this filter
            if ranked.numel() == 0:
                continue
            rows = scores if ranked.numel() == stop - start else scores.index_select(0, ranked)  # [Bf, M]
            pair_row, known = filter_index.lookup(ent[ranked], rel[ranked])  # known answers as (row, entity)
            kept = rows[pair_row, known]  # scores of the known answers, put back after ranking
            rows[pair_row, known] = NEG_INF
            slot = torch.full((stop - start,), -1, dtype=torch.long)
            slot[ranked] = torch.arange(ranked.numel())
            mine = triples[index_of[triples] == f]  # triples of the sets that use this filter
            # a target at -inf now is a known answer (or scored -inf, which merge_target reports as -1 alike)
            target_filtered[mine] = rows[slot[query_of[mine] - start], targets[mine]] == NEG_INF
            values, ids = top_k_lowest_id(rows, k)
            if torch.isnan(values).any():  # topk ranks NaN first, so a NaN anywhere in a row shows here
                raise ValueError("score_fn returned NaN scores; candidates would be meaningless")
            base_values[f, start + ranked], base_ids[f, start + ranked] = values, ids
            rows[pair_row, known] = kept
        del scores
    if torch.isnan(target_scores).any():
        raise ValueError("score_fn returned NaN scores; candidates would be meaningless")

    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, qs in zip(names, sets):
        part = slice(offset, offset + len(qs.targets))
        offset += len(qs.targets)
        f, q = slot_of[id(qs.filter_index)], query_of[part]
        out[name] = merge_target(
            base_values[f, q], base_ids[f, q], targets[part], target_scores[part], target_filtered[part], num_entities
        )
    return out


def split_candidates(
    score_fn: ScoreFn,
    splits: Mapping[str, torch.Tensor],
    train_filter: FilterIndex,
    full_filter: FilterIndex,
    k: int,
    batch_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """Candidate ids [2N, k] per split of id triples [N, 3] (queries of both directions, in
    :func:`~rq_kg_pipeline.evaluation.ranking.both_direction_queries` order).

    The ``train`` split is filtered with ``train_filter`` (its own sources only, so a train
    prompt never depends on valid/test answers); every other split with ``full_filter``.
    """
    num_relations = full_filter.num_relations
    sets = {
        split: QuerySet(*both_direction_queries(triples, num_relations), train_filter if split == "train" else full_filter)
        for split, triples in splits.items()
    }
    return top_k_candidates(score_fn, sets, k, batch_size)
