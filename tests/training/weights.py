"""Comparing the weights of two training runs that should agree up to float summation order."""

from __future__ import annotations

import torch

# Weights whose gradient is zero in exact arithmetic: ConvE's bn0 and conv bias (bn1 after the
# linear conv undoes any scale or shift of its input), its fc bias (bn2 removes the shift) and
# attention's key bias (softmax ignores a shift shared by all keys). Their gradients are float
# noise that Adam scales up to steps of ~lr, different in every summation order; they change
# nothing the model computes in training, so they (and the running statistics that see them)
# are not compared.
UNIDENTIFIABLE = {
    "scorer.bn0.weight", "scorer.bn0.bias", "scorer.conv.bias", "scorer.bn1.running_mean", "scorer.bn1.running_var",
    "scorer.fc.bias", "scorer.bn2.running_mean",
}  # fmt: skip


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-4, atol: float = 2e-5) -> None:
    assert a.keys() == b.keys()
    for name in a.keys() - UNIDENTIFIABLE:
        x, y = a[name], b[name]
        if name.endswith("qkv.bias"):  # query and value parts; the key part is the shift above
            x, y = x.chunk(3)[::2], y.chunk(3)[::2]
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
