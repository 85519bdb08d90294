"""ConvE scorer: shape helper, validation, scoring against candidates (no per-entity parameter)."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.models.conve import ConvEScorer, aligned_scores, default_conve_shape


@pytest.mark.parametrize(("dim", "shape"), [(200, (10, 20)), (64, (8, 8)), (32, (4, 8)), (48, (6, 8)), (7, (1, 7))])
def test_default_shape_is_most_square(dim: int, shape: tuple[int, int]) -> None:
    assert default_conve_shape(dim) == shape


def test_scores_are_query_dot_candidates() -> None:
    torch.manual_seed(0)
    scorer = ConvEScorer(32, 4, 8, num_filters=6, kernel_size=3).eval()
    ent, rel, cands = torch.randn(5, 32), torch.randn(5, 32), torch.randn(11, 32)
    logits = scorer(ent, rel, cands)
    assert logits.shape == (5, 11)
    torch.testing.assert_close(logits, scorer.query(ent, rel) @ cands.t())
    # A candidate's score depends on its vector only: no table indexed by entity id.
    assert not any("bias" in name and p.ndim == 1 and p.numel() == 11 for name, p in scorer.named_parameters())
    subset = torch.tensor([3, 7])
    torch.testing.assert_close(scorer(ent, rel, cands[subset]), logits[:, subset])
    # The relation matters: swapping it changes the scores.
    assert not torch.allclose(scorer(ent, rel.flip(0), cands), logits)


@pytest.mark.parametrize("count", [11, 16])
def test_aligned_scores_are_the_product_over_aligned_rows(count: int) -> None:
    """The product CUDA uses (M padded to a multiple of 8 for cuBLAS) has the plain product's values
    and gradients, with rows 16-byte aligned in bf16."""
    torch.manual_seed(0)
    query, cands = torch.randn(5, 32, requires_grad=True), torch.randn(count, 32, requires_grad=True)
    weights = torch.randn(5, count)
    scores = aligned_scores(query, cands)
    assert scores.shape == (5, count) and scores.stride(0) == 16
    (scores * weights).sum().backward()
    grads = query.grad.clone(), cands.grad.clone()
    query.grad = cands.grad = None
    plain = query @ cands.t()
    (plain * weights).sum().backward()
    torch.testing.assert_close(scores, plain)
    torch.testing.assert_close(grads, (query.grad, cands.grad))


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((32, 4, 4), {}, "k_h \\* k_w"),
        ((32, 4, 8), {"kernel_size": 9}, "kernel_size"),
        ((7, 1, 7), {}, "kernel_size"),
        ((32, 4, 8), {"input_drop": 1.5}, "input_drop"),
    ],
)
def test_invalid_parameters_are_rejected(args: tuple, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ConvEScorer(*args, **kwargs)


def test_candidates_must_have_the_model_dimension() -> None:
    scorer = ConvEScorer(32, 4, 8, kernel_size=3)
    with pytest.raises(ValueError, match="candidates"):
        scorer(torch.randn(2, 32), torch.randn(2, 32), torch.randn(10, 16))
