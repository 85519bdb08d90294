"""The semantic loss: 1 - cosine with known answers, masked rows ignored, targets checked."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.semantics.cache import no_text_embeddings
from rq_kg_pipeline.semantics.loss import TextTargets, semantic_loss


def test_one_minus_cosine_with_known_values_and_scale_invariance():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    predicted = torch.tensor([[3.0, 0.0], [1.0, 0.0], [-2.0, 0.0]])  # same direction, orthogonal, opposite
    every = torch.ones(3, dtype=torch.bool)
    assert semantic_loss(predicted, target, every).item() == pytest.approx((0 + 1 + 2) / 3)
    assert semantic_loss(predicted[:1], target[:1], every[:1]).item() == pytest.approx(0.0, abs=1e-7)


def test_masked_rows_do_not_count_and_all_masked_is_zero_without_nan():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    predicted = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    assert semantic_loss(predicted, target, torch.tensor([True, False])).item() == pytest.approx(0.0, abs=1e-7)
    predicted.requires_grad_(True)
    none = semantic_loss(predicted, target, torch.tensor([False, False]))
    none.backward()
    assert none.item() == 0.0 and torch.equal(predicted.grad, torch.zeros_like(predicted))


def test_targets_from_the_artifact():
    assert TextTargets.from_payload(no_text_embeddings(["a", "b"], "the KG has no names file")) is None
    payload = {"embeddings": torch.randn(2, 4), "mask": torch.tensor([True, False])}
    targets = TextTargets.from_payload(payload)
    assert targets.dim == 4 and targets.num_entities == 2
    with pytest.raises(ValueError, match="text mask must be bool"):
        TextTargets(torch.randn(2, 4), torch.ones(3, dtype=torch.bool))
