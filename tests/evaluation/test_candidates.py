"""Distinct-query candidate ranking equals per-triple filtered top-k, ties and padding included."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.evaluation import candidates
from rq_kg_pipeline.evaluation.candidates import QuerySet, top_k_candidates, top_k_lowest_id
from rq_kg_pipeline.evaluation.ranking import FilterIndex, both_direction_queries, top_k_filtered


def _table_score_fn(table: torch.Tensor):  # noqa: ANN202
    """Scores looked up from a fixed [M * 2R, M] table: deterministic, any batch order."""
    num_relation_ids = table.shape[0] // table.shape[1]
    return lambda ent, rel: table[ent * num_relation_ids + rel]


def _score_table(umls, levels: int | None) -> torch.Tensor:  # noqa: ANN001
    """Random scores per (entity, relation) query; with ``levels`` they are rounded so ties abound."""
    generator = torch.Generator().manual_seed(3)
    table = torch.randn(umls.num_entities * 2 * umls.num_relations, umls.num_entities, generator=generator)
    return table if levels is None else (table * levels).round()


@pytest.mark.parametrize("levels", [None, 2])
def test_equals_per_triple_filtered_top_k(umls, levels: int | None) -> None:  # noqa: ANN001
    score_fn = _table_score_fn(_score_table(umls, levels))
    every = FilterIndex.build([umls.train, umls.valid, umls.test], umls.num_entities, umls.num_relations)
    train_only = FilterIndex.build([umls.train], umls.num_entities, umls.num_relations)
    sets, expected = {}, {}
    for name, triples, index in (("train", umls.train, train_only), ("valid", umls.valid, every), ("test", umls.test, every)):
        ent, rel, target = both_direction_queries(triples, umls.num_relations)
        sets[name] = QuerySet(ent, rel, target, index)
        expected[name] = top_k_filtered(score_fn, ent, rel, index, k=10, keep=target, batch_size=97)
    got = top_k_candidates(score_fn, sets, k=10, batch_size=61)
    assert set(got) == {"train", "valid", "test"}
    for name in got:
        assert torch.equal(got[name], expected[name]), name
    # the target is never filtered out of its own list, other known answers always are
    ent, rel, target = both_direction_queries(umls.test, umls.num_relations)
    rows, known = every.lookup(ent, rel)
    listed = (got["test"][rows] == known.unsqueeze(1)).any(dim=1)
    assert not bool(listed[known != target[rows]].any())


def test_unfiltered_target_and_padding() -> None:
    # 4 entities, 1 relation; (0, r) knows answers 1, 2 and 3: with k = 4 only the kept target
    # and entity 0 remain, the rest is -1 padding.
    triples = torch.tensor([[0, 0, 1], [0, 0, 2], [0, 0, 3]])
    index = FilterIndex.build([triples], num_entities=4, num_relations=1)
    scores = torch.tensor([[0.5, 0.9, 0.1, 0.7]])
    score_fn = lambda ent, rel: scores.expand(ent.numel(), 4)  # noqa: E731
    ent, rel, target = triples[:, 0], triples[:, 1], triples[:, 2]
    got = top_k_candidates(score_fn, {"s": QuerySet(ent, rel, target, index)}, k=4)["s"]
    assert got.tolist() == [[1, 0, -1, -1], [0, 2, -1, -1], [3, 0, -1, -1]]
    assert torch.equal(got, top_k_filtered(score_fn, ent, rel, index, k=4, keep=target))
    # a target its filter does not know stays where the scores put it (no double entry)
    empty = FilterIndex.build([torch.tensor([[3, 0, 3]])], num_entities=4, num_relations=1)
    got = top_k_candidates(score_fn, {"s": QuerySet(ent, rel, target, empty)}, k=2)["s"]
    assert got.tolist() == [[1, 3], [1, 3], [1, 3]]


def test_top_k_lowest_id_breaks_ties_by_id() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, float("-inf"), 0.0, float("-inf"), float("-inf")]])
    values, ids = top_k_lowest_id(scores, 4)
    assert ids.tolist() == [[1, 2, 4, 3], [0, 2, -1, -1]]
    assert values[0].tolist() == [3.0, 3.0, 3.0, 2.0]


def test_invalid_arguments_raise(umls) -> None:  # noqa: ANN001
    index = FilterIndex.build([umls.train], umls.num_entities, umls.num_relations)
    ent, rel, target = both_direction_queries(umls.test[:5], umls.num_relations)
    score_fn = _table_score_fn(_score_table(umls, None))
    with pytest.raises(ValueError, match="k must be"):
        top_k_candidates(score_fn, {"t": QuerySet(ent, rel, target, index)}, k=0)
    with pytest.raises(ValueError, match="relations has ids"):
        top_k_candidates(score_fn, {"t": QuerySet(ent, rel + 2 * umls.num_relations, target, index)}, k=3)
    with pytest.raises(ValueError, match="batch_size"):
        top_k_candidates(score_fn, {"t": QuerySet(ent, rel, target, index)}, k=3, batch_size=0)


def test_score_blocks_capped_by_bytes(umls, monkeypatch) -> None:  # noqa: ANN001
    # BLOCK_BYTES of 40 rows of scores: score_fn never sees more, candidates unchanged
    table = _score_table(umls, 2)
    calls: list[int] = []

    def score_fn(ent: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        calls.append(ent.numel())
        return _table_score_fn(table)(ent, rel)

    index = FilterIndex.build([umls.train, umls.valid, umls.test], umls.num_entities, umls.num_relations)
    ent, rel, target = both_direction_queries(umls.valid, umls.num_relations)
    expected = top_k_filtered(score_fn, ent, rel, index, k=10, keep=target, batch_size=97)
    calls.clear()
    monkeypatch.setattr(candidates, "BLOCK_BYTES", 40 * 4 * umls.num_entities)
    got = top_k_candidates(score_fn, {"v": QuerySet(ent, rel, target, index)}, k=10, batch_size=1024)["v"]
    assert torch.equal(got, expected)
    assert max(calls) == 40 and sum(calls) == torch.unique(ent * 2 * umls.num_relations + rel).numel()
