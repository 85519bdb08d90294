"""Shared-part ConvE scoring gives the model's own codes-only scores (up to float rounding)."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.evaluation.conve_shared import shared_part_score_fn
from rq_kg_pipeline.evaluation.link_prediction import codes_only_score_fn
from rq_kg_pipeline.models.rqgcn import RQGCN

TINY = dict(init_dim=32, gcn_dim=32, gcn_layers=1, seq_len=4, num_code=32, num_quantizers=2, tf_layers=1, att_head=2)


def _model(umls, kernel_size: int) -> RQGCN:  # noqa: ANN001
    """A tiny model (ConvE image 4 x 8) with batch-norm statistics far from identity, as after training."""
    torch.manual_seed(0)
    model = RQGCN(umls.num_entities, umls.num_relations, **TINY, kernel_size=kernel_size, num_filters=6)
    generator = torch.Generator().manual_seed(1)
    for norm in (model.scorer.bn0, model.scorer.bn1, model.scorer.bn2):
        size = norm.running_mean.shape
        norm.running_mean.copy_(torch.randn(size, generator=generator))
        norm.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
        norm.weight.data.copy_(torch.randn(size, generator=generator))
        norm.bias.data.copy_(torch.randn(size, generator=generator))
    return model.eval()


@pytest.mark.parametrize("kernel_size", [1, 3, 4, 5])
def test_scores_equal_the_models(umls, kernel_size: int) -> None:  # noqa: ANN001
    model = _model(umls, kernel_size)  # 5 > k_h = 4: no row sees the entity alone, the plain path is used
    codes = torch.randint(0, 32, (umls.num_entities, 4, 2), generator=torch.Generator().manual_seed(2))
    heads = torch.arange(umls.num_entities).repeat_interleave(2 * umls.num_relations)  # every query
    relations = torch.arange(2 * umls.num_relations).repeat(umls.num_entities)
    with torch.no_grad():
        expected = codes_only_score_fn(model, umls.graph, codes)(heads, relations)
        got = shared_part_score_fn(model, umls.graph, codes)(heads, relations)
    assert got.shape == expected.shape == (len(heads), umls.num_entities)
    scale = float(expected.abs().max())
    assert float(expected.std()) > 0.05 * scale  # scores that rank entities, not a constant
    assert torch.allclose(got, expected, rtol=0, atol=1e-5 * scale)
    assert (got.topk(5).indices == expected.topk(5).indices).float().mean() > 0.999


def test_reused_output_holds_each_calls_scores(umls) -> None:  # noqa: ANN001
    """With ``reuse_output`` every call writes the same buffer; each result equals the plain scores
    of its batch until the next call, also when a batch is shorter or longer than the last."""
    model = _model(umls, 3)
    codes = torch.randint(0, 32, (umls.num_entities, 4, 2), generator=torch.Generator().manual_seed(2))
    plain = shared_part_score_fn(model, umls.graph, codes)
    reused = shared_part_score_fn(model, umls.graph, codes, reuse_output=True)
    generator = torch.Generator().manual_seed(3)
    results = []
    for size in (50, 20, 70):
        heads = torch.randint(0, umls.num_entities, (size,), generator=generator)
        relations = torch.randint(0, 2 * umls.num_relations, (size,), generator=generator)
        got = reused(heads, relations)
        assert torch.equal(got, plain(heads, relations))
        results.append(got)
    assert results[0].data_ptr() == results[1].data_ptr()  # written in place: the first 20 rows were overwritten
    assert results[2].data_ptr() != results[0].data_ptr()  # a longer batch than the buffer's: a new buffer
