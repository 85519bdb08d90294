"""The CPU dropout mask: right keep rate, scaling, gradients, seeding, and nn.Dropout elsewhere."""

import pytest
import torch

from rq_kg_pipeline.models.dropout import Dropout, keep_mask, keep_mask_permuted


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


def _old_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """The module's earlier definition: two autograd ops (mask, then scale) from the same random numbers."""
    keep = keep_mask(x.shape, round(p * 65536) / 65536, x.device)
    return x.masked_fill(~keep, 0.0) * (1.0 / (1.0 - round(p * 65536) / 65536))


@pytest.mark.parametrize("relu", [False, True])
def test_fused_ops_equal_the_op_by_op_definition_bit_for_bit(relu: bool) -> None:
    """dropout(x) and dropout.relu(x) against masked_fill * scale (after relu): values and gradients."""
    drop = Dropout(0.3).train()
    base = torch.randn(301, 7, generator=torch.Generator().manual_seed(4))
    upstream = torch.randn(301, 7, generator=torch.Generator().manual_seed(5))
    results = []
    for fused in (True, False):
        x = base.clone().requires_grad_()
        torch.manual_seed(6)
        if fused:
            y = drop.relu(x) if relu else drop(x)
        else:
            y = _old_dropout(torch.relu(x) if relu else x, 0.3)
        y.backward(upstream)
        results.append((y.detach(), x.grad))
    (y_fused, g_fused), (y_ref, g_ref) = results
    assert torch.equal(y_fused, y_ref) and torch.equal(g_fused, g_ref)
    assert (y_fused == 0).float().mean() > 0.3  # dropped and (with relu) clipped elements are really zero


def test_relu_dropout_keeps_only_its_output_for_backward() -> None:
    x = torch.randn(64, 32, requires_grad=True)
    y = Dropout(0.3).train().relu(x)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 1 and saved[0].data_ptr() == y.data_ptr()


def test_relu_dropout_is_plain_relu_when_off() -> None:
    x = torch.randn(50, 9)
    assert torch.equal(Dropout(0.3).eval().relu(x), torch.relu(x))
    assert torch.equal(Dropout(0.0).train().relu(x), torch.relu(x))


def test_permuted_keep_mask_is_the_keep_mask_permuted_and_contiguous() -> None:
    shape = torch.Size([6, 5, 3, 4])
    torch.manual_seed(8)
    ref = keep_mask(shape, 0.3, torch.device("cpu")).permute(0, 2, 3, 1)
    torch.manual_seed(8)
    mask = keep_mask_permuted(shape, 0.3, torch.device("cpu"), (0, 2, 3, 1))
    assert mask.is_contiguous() and torch.equal(mask, ref)
    drop = Dropout(0.3).train()
    torch.manual_seed(8)
    rows = drop.rows_keep_mask_permuted(torch.Size([2, 5, 3, 4]), 3, 6, torch.device("cpu"), (0, 2, 3, 1))
    assert torch.equal(rows, ref[3:5])  # a shard's rows of the whole batch's mask
    assert drop.eval().rows_keep_mask_permuted(shape, 0, 6, torch.device("cpu"), (0, 2, 3, 1)) is None
    with pytest.raises(ValueError, match="dims"):
        Dropout(0.3).train().rows_keep_mask_permuted(shape, 0, 6, torch.device("cpu"), (1, 0, 2, 3))
