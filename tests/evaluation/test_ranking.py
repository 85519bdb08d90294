"""Filtered ranking: hand-computed ranks (ties, filtering, both directions), a brute-force oracle,
batch invariance, metrics and filtered top-k."""

from __future__ import annotations


import pytest
import torch

from rq_kg_pipeline.evaluation.ranking import (
    FilterIndex,
    filtered_ranks,
    rank_metrics,
    top_k_filtered,
)
from tests.conftest import load_small_kg

M, R = 5, 2  # tiny hand-made graph: 5 entities, 2 relations (ids 2, 3 are their inverses)
TRAIN = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 1, 0], [0, 0, 1]])  # the repeat must be harmless
VALID = torch.tensor([[0, 0, 3]])
TEST = torch.tensor([[0, 0, 3], [4, 1, 2]])


def table_score_fn(table: torch.Tensor):
    """score_fn that looks scores up in a [M, 2R, M] table."""
    return lambda ent, rel: table[ent, rel]


def hand_table() -> torch.Tensor:
    table = torch.zeros(M, 2 * R, M)
    table[0, 0] = torch.tensor([0.5, 0.9, 0.8, 0.7, 0.7])  # (0, r0, ?): target 3
    table[3, 2] = torch.tensor([0.1, 0.3, 0.2, 0.0, 0.3])  # (3, r0^-1, ?): target 0
    table[4, 1] = torch.tensor([0.6, 0.1, 0.6, 0.6, 0.9])  # (4, r1, ?): target 2
    table[2, 3] = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2])  # (2, r1^-1, ?): target 4, all tied
    return table


def test_filter_index_groups_answers_of_both_directions() -> None:
    index = FilterIndex.build([TRAIN, VALID, TEST], M, R)
    ent, rel = index.query_entities(), index.query_relations()
    answers = {}
    for i in range(index.num_queries):
        answers[(int(ent[i]), int(rel[i]))] = index.targets[index.offsets[i] : index.offsets[i + 1]].tolist()
    assert answers == {
        (0, 0): [1, 2, 3],  # duplicate (0, 0, 1) counted once, targets sorted
        (3, 1): [0],
        (4, 1): [2],
        (1, 2): [0],
        (2, 2): [0],
        (3, 2): [0],
        (0, 3): [3],
        (2, 3): [4],
    }
    rows, known = index.lookup(torch.tensor([0, 1, 0]), torch.tensor([0, 0, 3]))
    assert rows.tolist() == [0, 0, 0, 2] and known.tolist() == [1, 2, 3, 3]  # (1, 0) is unknown


def test_filtered_ranks_hand_computed() -> None:
    index = FilterIndex.build([TRAIN, VALID, TEST], M, R)
    ranks = filtered_ranks(table_score_fn(hand_table()), TEST, index, R)
    # Tail queries first:
    # (0, r0, 3): answers 1, 2 filtered; candidates 0 (0.5), 3 (0.7), 4 (0.7) -> tie of two: 1.5
    # (4, r1, 2): no other answers; 4 (0.9) better, 0 and 3 tie with 2 at 0.6 -> 1 + (3 + 1) / 2 = 3
    # Head queries:
    # (3, r0^-1, 0): only answer is 0 itself; 1, 2, 4 better -> 4
    # (2, r1^-1, 4): 4 is the only answer; all five entities tied -> (5 + 1) / 2 = 3
    assert ranks.dtype == torch.float64
    assert ranks.tolist() == [1.5, 3.0, 4.0, 3.0]


def test_filtering_changes_rank_only_through_other_answers() -> None:
    table = hand_table()
    unfiltered = FilterIndex.build([TEST[:1]], M, R)  # knows only the test triple itself
    filtered = FilterIndex.build([TRAIN, VALID, TEST], M, R)
    score_fn = table_score_fn(table)
    # Unfiltered, (0, r0, 3) has 1 (0.9) and 2 (0.8) ahead and ties with 4: 2 + 1.5.
    assert filtered_ranks(score_fn, TEST[:1], unfiltered, R)[0].item() == 3.5
    assert filtered_ranks(score_fn, TEST[:1], filtered, R)[0].item() == 1.5


def brute_force_ranks(table: torch.Tensor, triples: torch.Tensor, known: list[torch.Tensor]) -> list[float]:
    """Independent per-query reference: Python sets and loops."""
    answers: dict[tuple[int, int], set[int]] = {}
    for h, r, t in torch.cat(known).tolist():
        answers.setdefault((h, r), set()).add(t)
        answers.setdefault((t, r + R_BIG), set()).add(h)
    queries = [(h, r, t) for h, r, t in triples.tolist()] + [(t, r + R_BIG, h) for h, r, t in triples.tolist()]
    ranks = []
    for e, r, target in queries:
        s = table[e, r].tolist()
        others = [x for x in range(len(s)) if x != target and x not in answers.get((e, r), set())]
        better = sum(s[x] > s[target] for x in others)
        equal = sum(s[x] == s[target] for x in others)
        ranks.append(1 + better + equal / 2)
    return ranks


M_BIG, R_BIG = 40, 3


def random_kg(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    triples = torch.stack(
        [
            torch.randint(0, M_BIG, (300,), generator=g),
            torch.randint(0, R_BIG, (300,), generator=g),
            torch.randint(0, M_BIG, (300,), generator=g),
        ],
        dim=1,
    )
    # Integer scores in a small range: many ties.
    table = torch.randint(0, 6, (M_BIG, 2 * R_BIG, M_BIG), generator=g).float()
    return triples[:200], triples[200:250], triples[250:], table


def test_filtered_ranks_match_brute_force_oracle_for_every_batch_size() -> None:
    train, valid, test, table = random_kg(0)
    index = FilterIndex.build([train, valid, test], M_BIG, R_BIG)
    expected = torch.tensor(brute_force_ranks(table, test, [train, valid, test]), dtype=torch.float64)
    for batch_size in (1, 7, 64, 10_000):
        ranks = filtered_ranks(table_score_fn(table), test, index, R_BIG, batch_size=batch_size)
        assert torch.equal(ranks, expected), batch_size


def test_filtered_ranks_match_oracle_with_infinite_scores_and_partial_filters() -> None:
    # +-inf scores (at targets too, so s - s_t is NaN there) and a filter index that misses
    # some test triples (their targets are not filtered): the fast path must equal the oracle.
    train, valid, test, table = random_kg(3)
    g = torch.Generator().manual_seed(3)
    table[torch.rand(table.shape, generator=g) < 0.08] = float("-inf")
    table[torch.rand(table.shape, generator=g) < 0.05] = float("inf")
    index = FilterIndex.build([train, valid, test[::2]], M_BIG, R_BIG)
    expected = torch.tensor(brute_force_ranks(table, test, [train, valid, test[::2]]), dtype=torch.float64)
    assert torch.isinf(torch.stack([table[h, r, t] for h, r, t in test.tolist()])).any()  # the hard case occurs
    for batch_size in (5, 10_000):
        assert torch.equal(filtered_ranks(table_score_fn(table), test, index, R_BIG, batch_size=batch_size), expected)


def test_filtered_ranks_batches_bound_score_memory() -> None:
    train, valid, test, table = random_kg(1)
    index = FilterIndex.build([train, valid, test], M_BIG, R_BIG)
    seen = []

    def score_fn(ent: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        seen.append(ent.numel())
        return table[ent, rel]

    filtered_ranks(score_fn, test, index, R_BIG, batch_size=16)
    ent = torch.cat([test[:, 0], test[:, 2]])
    rel = torch.cat([test[:, 1], test[:, 1] + R_BIG])
    distinct_queries = torch.unique(ent * 2 * R_BIG + rel).numel()
    assert max(seen) == 16 and sum(seen) == distinct_queries  # each distinct query scored once


def test_shared_queries_are_scored_once_and_ranked_per_target() -> None:
    # Three test triples share (0, r0, ?) with different tails: one scoring call serves all three,
    # and each gets its own rank (the other two tails are filtered as known answers).
    test = torch.tensor([[0, 0, 1], [0, 0, 2], [0, 0, 3]])
    index = FilterIndex.build([test], 5, 1)
    calls = []

    def score_fn(ent: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        calls.append((ent.tolist(), rel.tolist()))
        return torch.tensor([[0.0, 3.0, 2.0, 1.0, 2.5]]).expand(ent.numel(), 5) + ent.unsqueeze(1)

    ranks = filtered_ranks(score_fn, test, index, 1)
    assert calls[0] == ([0, 1, 2, 3], [0, 1, 1, 1])  # (0, r0) once; heads side (t, r0 + R) per tail
    # Tail side: candidates are {0, 4} plus the target (scores 0.0, 2.5); unfiltered, tail 3
    # would rank 4th behind 1, 4 and 2.
    assert ranks[:3].tolist() == [1.0, 2.0, 2.0]


def test_constant_scores_give_the_expected_random_rank() -> None:
    train, valid, test, _ = random_kg(2)
    index = FilterIndex.build([train, valid, test], M_BIG, R_BIG)
    ranks = filtered_ranks(lambda e, r: torch.zeros(e.numel(), M_BIG), test, index, R_BIG)
    ent = torch.cat([test[:, 0], test[:, 2]])
    rel = torch.cat([test[:, 1], test[:, 1] + R_BIG])
    # Candidates = all entities minus the other known answers; the mean rank is (n + 1) / 2.
    n_candidates = M_BIG - index.mask(ent, rel).sum(dim=1) + 1
    assert torch.equal(ranks, (n_candidates.double() + 1) / 2)


def test_rank_metrics_values() -> None:
    metrics = rank_metrics(torch.tensor([1.0, 2.0, 4.0, 10.0, 10.5]))
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 10 + 1 / 10.5) / 5)
    assert metrics["mr"] == pytest.approx(27.5 / 5)
    assert metrics["hits@1"] == pytest.approx(1 / 5)
    assert metrics["hits@3"] == pytest.approx(2 / 5)
    assert metrics["hits@10"] == pytest.approx(4 / 5)  # 10.5 straddles 10: a miss
    with pytest.raises(ValueError, match="empty"):
        rank_metrics(torch.empty(0))


def test_invalid_inputs_are_named() -> None:
    index = FilterIndex.build([TRAIN], M, R)
    score_fn = table_score_fn(hand_table())
    with pytest.raises(ValueError, match="triples"):
        filtered_ranks(score_fn, torch.tensor([[0, 5, 1]]), index, R)
    with pytest.raises(ValueError, match="num_relations"):
        filtered_ranks(score_fn, TEST, index, R + 1)
    with pytest.raises(ValueError, match="NaN"):
        filtered_ranks(lambda e, r: torch.full((e.numel(), M), float("nan")), TEST, index, R)
    with pytest.raises(ValueError, match="shape"):
        filtered_ranks(lambda e, r: torch.zeros(e.numel(), M - 1), TEST, index, R)
    with pytest.raises(ValueError, match="triple_sets"):
        FilterIndex.build([torch.tensor([[0, 0, M]])], M, R)


def test_top_k_filters_other_answers_but_keeps_the_target() -> None:
    index = FilterIndex.build([TRAIN, VALID, TEST], M, R)
    score_fn = table_score_fn(hand_table())
    ent, rel = torch.tensor([0, 0, 4]), torch.tensor([0, 0, 1])
    keep = torch.tensor([3, 1, 2])
    top = top_k_filtered(score_fn, ent, rel, index, k=4, keep=keep)
    # (0, r0) answers {1, 2, 3}: keep 3 -> 3 (0.7), 4 (0.7, tie -> lower id first), 0 (0.5),
    # then only filtered entities remain -> padding -1; keep 1 -> 1 (0.9), 4, 0, -1
    # (4, r1) answers {2}, keep 2 -> 4 (0.9), then 0, 2, 3 (0.6, ties by id)
    assert top.tolist() == [[3, 4, 0, -1], [1, 4, 0, -1], [4, 0, 2, 3]]
    no_keep = top_k_filtered(score_fn, ent[:1], rel[:1], index, k=2)
    assert no_keep.tolist() == [[4, 0]]


def test_top_k_matches_oracle_and_is_batch_invariant() -> None:
    train, valid, test, table = random_kg(3)
    index = FilterIndex.build([train, valid, test], M_BIG, R_BIG)
    ent, rel, keep = test[:, 0], test[:, 1], test[:, 2]
    full = top_k_filtered(table_score_fn(table), ent, rel, index, k=5, keep=keep)
    for batch_size in (1, 9):
        assert torch.equal(top_k_filtered(table_score_fn(table), ent, rel, index, 5, keep, batch_size), full)
    known = index.mask(ent, rel)
    for i in range(len(test)):
        allowed = [x for x in range(M_BIG) if not known[i, x] or x == int(keep[i])]
        expected = sorted(allowed, key=lambda x: (-float(table[ent[i], rel[i], x]), x))[:5]
        assert full[i].tolist() == expected
    with pytest.raises(ValueError, match="k must be"):
        top_k_filtered(table_score_fn(table), ent, rel, index, k=M_BIG + 1)


def test_filter_index_on_fb15k237(fb15k237_dir) -> None:
    kg = load_small_kg(fb15k237_dir)
    train, valid, test = kg.train, kg.valid, kg.test
    index = FilterIndex.build([train, valid, test], kg.num_entities, kg.num_relations)
    assert int(index.offsets[-1]) == 2 * len(torch.unique(torch.cat([train, valid, test]), dim=0))
    # Every valid triple's answer is indexed under its query, in both directions.
    rows, known = index.lookup(valid[:, 0], valid[:, 1])
    hits = torch.zeros(len(valid), dtype=torch.bool)
    hits[rows[known == valid[rows, 2]]] = True
    assert bool(hits.all())
    rows, known = index.lookup(valid[:, 2], valid[:, 1] + kg.num_relations)
    hits = torch.zeros(len(valid), dtype=torch.bool)
    hits[rows[known == valid[rows, 0]]] = True
    assert bool(hits.all())


def test_top_k_with_many_ties_and_filtered_entries_matches_brute_force() -> None:
    from rq_kg_pipeline.evaluation.ranking import _top_k_lowest_id_ties

    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        m, k = int(torch.randint(5, 40, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
        ranked = torch.randint(0, 4, (5, m), generator=g).float()  # few distinct values: many ties
        ranked[torch.rand(5, m, generator=g) < 0.5] = float("-inf")  # filtered
        got = _top_k_lowest_id_ties(ranked, k)
        for row in range(5):
            best = sorted(range(m), key=lambda j: (-ranked[row, j].item(), j))[:k]
            assert got[row].tolist() == [j if ranked[row, j] > float("-inf") else -1 for j in best]
