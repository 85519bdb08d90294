"""Which examples a split gets: queries in both directions, negatives, order, caps, "w/o codes" share.

Selects examples for a whole split with array operations and returns them as lazily rendered
JSON Lines, so writing needs memory for one chunk of records, not for a whole split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rq_kg_pipeline.prompts.columns import JSONLines
from rq_kg_pipeline.prompts.link_prediction import link_prediction_records
from rq_kg_pipeline.prompts.triple_classification import sample_negatives, triple_classification_records


@dataclass(frozen=True)
class EntityText:
    """What prompts show of entities and relations."""

    names: Sequence[str]  # [M] display names
    codes: Sequence[str]  # [M] rendered code tokens
    relation_names: Sequence[str]  # [2R] names, inverses last


def _order(count: int, shuffle: bool, seed: int, max_examples: int | None) -> torch.Tensor:
    """Indices [n] of the examples to emit: a seeded permutation (or identity), capped."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(count)
    return order if max_examples is None else order[:max_examples]


def _without_codes(count: int, fraction: float, seed: int) -> torch.Tensor:
    """[count] bool: which examples show names only (the reference's "w/o codes" ablation)."""
    return torch.rand(count, generator=torch.Generator().manual_seed(seed + 1)) < fraction


def link_prediction_examples(
    text: EntityText,
    queries: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    candidates: torch.Tensor,
    *,
    num_answers: int,
    shuffle: bool,
    seed: int,
    max_examples: int | None,
    without_codes_fraction: float,
    only_answer_in_candidates: bool = False,
    record_format: str = "prompt_completion",
) -> JSONLines:
    """Records for queries (entity [N], relation [N], target [N]) with their candidates [N, k];
    queries come from :func:`~rq_kg_pipeline.evaluation.ranking.both_direction_queries`."""
    heads, rels, targets = queries
    order = _order(len(heads), shuffle, seed, max_examples)
    return link_prediction_records(
        heads[order],
        rels[order],
        targets[order],
        candidates[order],
        text.names,
        text.codes,
        text.relation_names,
        num_answers=num_answers,
        without_codes=_without_codes(len(order), without_codes_fraction, seed),
        only_answer_in_candidates=only_answer_in_candidates,
        record_format=record_format,
    )


def triple_classification_examples(
    text: EntityText,
    positives: torch.Tensor,
    known: torch.Tensor,
    *,
    negatives_per_positive: int,
    shuffle: bool,
    seed: int,
    max_examples: int | None,
    without_codes_fraction: float,
    record_format: str = "prompt_completion",
) -> JSONLines:
    """True triples [N, 3] and ``negatives_per_positive`` corruptions of each that no split contains."""
    negatives = sample_negatives(positives, known, len(text.names), negatives_per_positive, seed)
    triples = torch.cat([positives, negatives])  # [N * (1 + ratio), 3]
    labels = torch.cat([torch.ones(len(positives), dtype=torch.bool), torch.zeros(len(negatives), dtype=torch.bool)])
    order = _order(len(triples), shuffle, seed, max_examples)
    return triple_classification_records(
        triples[order],
        labels[order],
        text.names,
        text.codes,
        text.relation_names,
        without_codes=_without_codes(len(order), without_codes_fraction, seed),
        record_format=record_format,
    )
