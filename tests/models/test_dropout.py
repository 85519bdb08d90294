"""The CPU dropout mask: right keep rate, scaling, gradients, seeding, and nn.Dropout elsewhere."""

import pytest
import torch

from rq_kg_pipeline.models.dropout import Dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_mask_keeps_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([400, 1000]), p, torch.device("cpu"))
    assert mask.dtype == torch.bool and mask.shape == (400, 1000)
    assert abs(mask.float().mean().item() - (1 - p)) < 0.005  # 400k draws: sd ~ 0.0008


def test_dropout_scales_kept_values_and_routes_gradients() -> None:
    torch.manual_seed(1)
    x = torch.randn(301, 7, requires_grad=True)  # odd element count: the last half-word is cut
    drop = Dropout(0.3).train()
    y = drop(x)
    kept = y != 0
    p = round(0.3 * 65536) / 65536
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))


def test_same_seed_same_mask_and_eval_is_identity() -> None:
    x = torch.ones(64, 64)
    drop = Dropout(0.5).train()
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(a, drop(x))
    assert not torch.equal(a, drop(x))  # the generator advanced
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
