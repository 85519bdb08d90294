"""Codes-only scoring in CPU row blocks: the same scores as one call of the model's scorer."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.evaluation.link_prediction import _row_blocks, codes_only_score_fn, continuous_score_fn
from rq_kg_pipeline.models.rqgcn import RQGCN

SMALL = dict(init_dim=16, gcn_dim=32, gcn_layers=2, seq_len=4, num_code=16, num_quantizers=2, tf_layers=1, att_head=4, num_filters=8, kernel_size=3)


def test_block_scores_equal_one_call_bit_for_bit(umls, monkeypatch) -> None:
    torch.manual_seed(0)
    model = RQGCN(umls.num_entities, umls.num_relations, **SMALL).eval()
    codes = model.cal_allent_codes(umls.graph)
    g = torch.Generator().manual_seed(0)
    heads = torch.randint(0, umls.num_entities, (100,), generator=g)
    rels = torch.randint(0, 2 * umls.num_relations, (100,), generator=g)
    with torch.no_grad():
        entities = model.entity_vectors_from_codes(codes)
        _, relations = model.encode(umls.graph)
        expected = model.score(entities[heads], rels, relations, entities)  # [100, M] one call
        monkeypatch.setattr("rq_kg_pipeline.evaluation.link_prediction.CPU_SCORE_ROWS", 16)
        got = codes_only_score_fn(model, umls.graph, codes)(heads, rels)  # blocks 16 x 5 + 20
        assert got.shape == (100, umls.num_entities) and got.dtype == torch.float32
        assert torch.equal(got, expected)
        continuous = continuous_score_fn(model, umls.graph)(heads, rels)
        ent, _ = model.encode(umls.graph)
        assert torch.equal(continuous, model.score(model.continuous_query_vectors(ent)[heads], rels, relations, ent))


@pytest.mark.parametrize(("n", "rows"), [(100, 16), (256, 64), (20112 % 256, 64), (63, 64), (64, 64), (1, 64)])
def test_row_blocks_cover_with_the_remainder_merged(n: int, rows: int) -> None:
    blocks = _row_blocks(n, rows)
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert all(min(rows, n) <= stop - start < 2 * rows for start, stop in blocks)


def test_codes_and_relations_come_from_one_encode(umls) -> None:
    torch.manual_seed(1)
    model = RQGCN(umls.num_entities, umls.num_relations, **SMALL)
    model.train()
    codes, relations = model.codes_and_relations(umls.graph, batch_size=50)
    assert model.training  # mode restored
    assert torch.equal(codes, model.cal_allent_codes(umls.graph))
    model.eval()
    with torch.no_grad():
        assert torch.equal(relations, model.encode(umls.graph)[1])
    heads, rels = torch.arange(40), torch.arange(40) % (2 * umls.num_relations)
    given = codes_only_score_fn(model, umls.graph, codes, relations=relations)(heads, rels)
    assert torch.equal(given, codes_only_score_fn(model, umls.graph, codes)(heads, rels))
    with pytest.raises(ValueError, match="relations must be"):
        codes_only_score_fn(model, umls.graph, codes, relations=relations[:3])
