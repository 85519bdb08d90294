"""1-N training queries: every training answer in both directions, smoothed labels, seeded batches."""

from __future__ import annotations


import pytest
import torch

from rq_kg_pipeline.training.queries import TrainQueries
from tests.conftest import load_small_kg


def test_queries_hold_every_training_answer_in_both_directions(umls) -> None:
    queries = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations)
    r_count = umls.num_relations
    expected: dict[tuple[int, int], set[int]] = {}
    for h, r, t in umls.train.tolist():
        expected.setdefault((h, r), set()).add(t)
        expected.setdefault((t, r + r_count), set()).add(h)
    index = queries.index
    got = {
        (int(e), int(r)): set(index.targets[index.offsets[i] : index.offsets[i + 1]].tolist())
        for i, (e, r) in enumerate(zip(index.query_entities(), index.query_relations()))
    }
    assert len(queries) == len(expected)
    assert got == expected


def test_labels_are_smoothed_indicators(umls) -> None:
    queries = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations)
    m, eps = umls.num_entities, 0.1
    ids = torch.tensor([0, 5, len(queries) - 1])
    labels = queries.labels(ids, eps)
    assert labels.shape == (3, m) and labels.dtype == torch.float32
    for row, qid in enumerate(ids.tolist()):
        answers = queries.index.targets[queries.index.offsets[qid] : queries.index.offsets[qid + 1]]
        expected = torch.full((m,), eps / m)
        expected[answers] = (1 - eps) + eps / m
        assert torch.equal(labels[row], expected)
    answer_counts = queries.index.offsets[ids + 1] - queries.index.offsets[ids]
    assert torch.equal(queries.labels(ids, 0.0).sum(dim=1), answer_counts.float())
    with pytest.raises(ValueError, match="label_smoothing"):
        queries.labels(ids, 1.0)


def test_batches_cover_each_query_once_in_a_seeded_order(umls) -> None:
    queries = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations)

    def epoch_order(generator: torch.Generator) -> list[tuple[int, int]]:
        pairs = []
        for batch in queries.batches(100, generator, 0.1):
            assert batch.labels.shape == (batch.heads.numel(), umls.num_entities)
            pairs += list(zip(batch.heads.tolist(), batch.rels.tolist()))
        return pairs

    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    first, again = epoch_order(g1), epoch_order(g2)
    assert first == again  # same seed, same order
    assert epoch_order(g1) != first  # the next epoch is reshuffled
    keys = set(zip(queries.index.query_entities().tolist(), queries.index.query_relations().tolist()))
    assert len(first) == len(queries) and set(first) == keys
    sizes = [b.heads.numel() for b in queries.batches(100, g1, 0.1)]
    assert sizes[:-1] == [100] * (len(sizes) - 1) and sum(sizes) == len(queries)
    assert len(sizes) == queries.num_batches(100)


def test_fb15k237_queries(fb15k237_dir) -> None:
    kg = load_small_kg(fb15k237_dir)
    queries = TrainQueries.build(kg.train, kg.num_entities, kg.num_relations)
    h, r, t = kg.train.unbind(dim=1)
    pairs = torch.cat([torch.stack([h, r], 1), torch.stack([t, r + kg.num_relations], 1)])
    assert len(queries) == len(torch.unique(pairs, dim=0))
    assert 140_000 < len(queries) < 160_000
    assert int(queries.index.offsets[-1]) == 2 * len(torch.unique(kg.train, dim=0))


def test_no_batch_of_one_query(umls):
    """A final batch of one would break batch norm in training: it joins the previous batch."""
    queries = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations)
    n = len(queries)
    for batch_size in (n - 1, (n - 1) // 2, n, 1000):
        sizes = [len(b.heads) for b in queries.batches(batch_size, torch.Generator().manual_seed(0), 0.1)]
        assert sum(sizes) == n and min(sizes) > 1
        assert len(sizes) == queries.num_batches(batch_size)
