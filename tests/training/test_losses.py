"""The fused 1-N structure loss: PyTorch's BCE-with-logits value and gradient, bit for bit, with label-smoothed
FB15k-237-width rows; PyTorch's own function where the fused one does not apply."""

import pytest
import torch
import torch.nn.functional as F

from rq_kg_pipeline.training.losses import bce_with_logits_mean, compiled_structure_loss, structure_loss

M = 14_541  # FB15k-237's entity count: the width of the real label rows


def _logits_and_labels(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of ConvE's range with a few extremes, and label-smoothed 1-N targets (eps 0.1, a few answers per row)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, M, generator=gen) * 6 - 4
    logits[0, :6] = torch.tensor([0.0, -0.0, 1e-30, -90.0, 90.0, 17.0])
    labels = torch.full((rows, M), 0.1 / M)
    answers = torch.randint(0, M, (rows, 3), generator=gen)
    labels.scatter_(1, answers, 0.9 + 0.1 / M)
    return logits, labels


@pytest.mark.parametrize("rows", [1, 37])  # 37: the last 16-row log-sigmoid chunk is partial
def test_value_and_gradient_equal_pytorch_bit_for_bit(rows: int) -> None:
    logits, labels = _logits_and_labels(rows, seed=rows)
    results = []
    for loss_fn in (bce_with_logits_mean, F.binary_cross_entropy_with_logits):
        x = logits.clone().requires_grad_()
        loss = loss_fn(x, labels)
        (loss * 3.0).backward()  # an upstream gradient other than 1
        results.append((loss.detach(), x.grad))
    (fused, fused_grad), (ref, ref_grad) = results
    assert torch.equal(fused, ref)
    assert torch.equal(fused_grad, ref_grad)


def test_gradient_twice_with_retained_graph() -> None:
    logits, labels = _logits_and_labels(4, seed=1)
    x = logits.clone().requires_grad_()
    loss = bce_with_logits_mean(x, labels)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    assert torch.equal(x.grad, first * 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda x, y: (x.double(), y.double()),  # another dtype
        lambda x, y: (x.t(), y.t()),  # not contiguous
        lambda x, y: (x[0], y[0]),  # one row as a 1-D tensor
        lambda x, y: (x, y.requires_grad_()),  # a gradient wanted on the targets
    ],
)
def test_other_inputs_get_pytorchs_function(make) -> None:
    logits, labels = _logits_and_labels(3, seed=2)
    x, y = make(logits.clone().requires_grad_(), labels.clone())
    loss = bce_with_logits_mean(x, y)
    ref = F.binary_cross_entropy_with_logits(x, y)
    assert torch.equal(loss, ref)
    assert loss.grad_fn.name() == ref.grad_fn.name()


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="logits and labels"):
        bce_with_logits_mean(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
)
def test_structure_loss_of_bf16_logits_and_its_compiled_form(device: str) -> None:
    """The step's structure loss casts bf16 logits (autocast's) to float32 first; on CUDA its compiled
    form (fit's with torch_compile) gives the same loss and gradient up to float32 summation order."""
    torch.manual_seed(0)
    logits = (torch.randn(64, 1001, device=device) * 4).bfloat16().requires_grad_()
    labels = torch.rand(64, 1001, device=device)
    loss = structure_loss(logits, labels)
    (grad,) = torch.autograd.grad(loss, logits)
    reference = F.binary_cross_entropy_with_logits(logits.detach().float().requires_grad_(), labels)
    torch.testing.assert_close(loss, reference)
    assert grad.dtype == torch.bfloat16
    if device == "cuda":
        compiled = compiled_structure_loss()(logits, labels)
        (compiled_grad,) = torch.autograd.grad(compiled, logits)
        torch.testing.assert_close(compiled, loss, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(compiled_grad, grad)
