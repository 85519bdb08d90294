"""ConvE's training path (channels-last GEMM conv; on CPU fused batch norm + relu + dropout + fc) against
the module-by-module definition: same random numbers (CPU), same values and gradients up to rounding."""

import pytest
import torch
import torch.nn.functional as F

from rq_kg_pipeline.models.conve import ConvEScorer


def _reference_logits(scorer: ConvEScorer, ent: torch.Tensor, rel: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """ConvE as written in its docstring, one module after another (NCHW, PyTorch's conv and batch norm)."""
    image = torch.cat([ent.reshape(-1, 1, scorer.k_h, scorer.k_w), rel.reshape(-1, 1, scorer.k_h, scorer.k_w)], dim=2)
    x = scorer.input_drop(scorer.bn0(image))
    x = scorer.feature_drop(F.relu(scorer.bn1(scorer.conv(x))))
    x = scorer.hidden_drop(scorer.fc(x.flatten(1)))
    return F.relu(scorer.bn2(x)) @ cands.t()


@pytest.mark.parametrize(
    ("drops", "device"),
    [
        ((0.2, 0.3, 0.3), "cpu"),
        ((0.0, 0.0, 0.0), "cpu"),
        # CUDA's reference dropout is PyTorch's own (other random numbers): compared without dropout
        pytest.param((0.0, 0.0, 0.0), "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ],
)
def test_training_step_matches_the_module_by_module_definition(drops: tuple[float, float, float], device: str, monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the reference conv in float32 on CUDA too
    torch.manual_seed(0)
    b, m, dim = 37, 50, 32  # 37 images: the last chunk of the fused sweeps is partial
    scorers = [ConvEScorer(dim, 4, 8, num_filters=6, kernel_size=3).train().to(device) for _ in range(2)]
    scorers[1].load_state_dict(scorers[0].state_dict())
    for s in scorers:
        s.input_drop.p, s.feature_drop.p, s.hidden_drop.p = drops
        with torch.no_grad():
            s.conv.bias.add_(3.0)  # a conv bias far from zero: batch norm must centre before squaring
    data = [torch.randn(b, dim, device=device), torch.randn(b, dim, device=device), torch.randn(m, dim, device=device)]
    labels = torch.rand(b, m, device=device)
    results = []
    for scorer, fn in zip(scorers, (lambda s, *x: s(*x), _reference_logits)):
        inputs = [t.clone().requires_grad_() for t in data]
        torch.manual_seed(7)  # both draw the same dropout masks
        logits = fn(scorer, *inputs)
        F.binary_cross_entropy_with_logits(logits, labels).backward()
        results.append((logits.detach(), [t.grad for t in inputs], {n: p.grad for n, p in scorer.named_parameters()}))
    (fast, fast_in, fast_p), (ref, ref_in, ref_p) = results
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(fast_in, ref_in):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-7)
    for name in ref_p:
        if name in ("conv.bias", "bn0.weight"):  # exactly zero gradient (batch norm after them): rounding only
            assert fast_p[name].abs().max() < 1e-5, name
        else:
            torch.testing.assert_close(fast_p[name], ref_p[name], rtol=1e-4, atol=1e-7, msg=lambda s: f"{name}: {s}")
    fast_bn, ref_bn = scorers[0].bn1, scorers[1].bn1
    torch.testing.assert_close(fast_bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(fast_bn.running_var, ref_bn.running_var)
    assert int(fast_bn.num_batches_tracked) == int(ref_bn.num_batches_tracked) == 1



def _fused_run(scorer: ConvEScorer, data: list[torch.Tensor], labels: torch.Tensor, frozen: tuple[str, ...] = ()) -> tuple:
    """Logits, input gradients and parameter gradients of one seeded CPU training step (parameters in
    ``frozen`` and the candidates without gradients)."""
    for name, p in scorer.named_parameters():
        p.requires_grad_(name not in frozen)
        p.grad = None
    ent, rel = (t.clone().requires_grad_() for t in data[:2])
    torch.manual_seed(11)
    logits = scorer(ent, rel, data[2])
    F.binary_cross_entropy_with_logits(logits, labels).backward(retain_graph=True)
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in scorer.named_parameters()}
    return logits, ent.grad.clone(), grads


def test_backward_keeps_its_saved_tensors_and_frozen_parts_get_no_gradient() -> None:
    torch.manual_seed(3)
    b, m, dim = 19, 30, 32
    scorer = ConvEScorer(dim, 4, 8, num_filters=6, kernel_size=3).train()
    data = [torch.randn(b, dim), torch.randn(b, dim), torch.randn(m, dim)]
    labels = torch.rand(b, m)
    logits, ent_grad, grads = _fused_run(scorer, data, labels)
    # A second backward through the retained graph: backward rebuilt its features from what it saved,
    # without overwriting any of it, so the gradients double exactly.
    F.binary_cross_entropy_with_logits(logits, labels).backward()
    for name, p in scorer.named_parameters():
        assert torch.equal(p.grad, 2 * grads[name]), name
    frozen = ("fc.weight", "fc.bias", "conv.weight", "bn1.weight")
    _, ent_grad_frozen, grads_frozen = _fused_run(scorer, data, labels, frozen)
    assert torch.equal(ent_grad_frozen, ent_grad)
    for name in grads:
        assert (grads_frozen[name] is None) == (name in frozen), name
        if name not in frozen:
            assert torch.equal(grads_frozen[name], grads[name]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_feature_dropout_draws_a_new_mask_in_every_graph_replay(compiled: bool) -> None:
    """Recorded in a CUDA graph (as training replays its step), compiled or not, the feature-map
    mask is drawn anew at each replay: a mask frozen at capture would silently train one fixed
    sub-network."""
    torch.manual_seed(0)
    scorer = ConvEScorer(32, 4, 8, num_filters=8, kernel_size=3, input_drop=0.0, feature_drop=0.5, hidden_drop=0.0).cuda().train()
    if compiled:
        scorer.compile(dynamic=False)
    ent, rel = torch.randn(64, 32, device="cuda"), torch.randn(64, 32, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            scorer(ent, rel, ent)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = scorer(ent, rel, ent)  # [64, 64]
    replays = []
    for _ in range(3):
        graph.replay()
        replays.append(out.clone())
    assert not torch.equal(replays[0], replays[1]) and not torch.equal(replays[1], replays[2])
    # the same weights and inputs without dropout give other scores: the replays did drop features
    scorer.feature_drop.p = 0.0
    assert not torch.allclose(scorer.forward(ent, rel, ent), replays[0])  # forward: the plain module
