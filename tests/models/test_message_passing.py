"""Native message passing on UMLS: the fused mult op equals the general three-map composition bit for bit
(values and both gradients) while keeping nothing edge-pair-sized, and the sparse products equal ``A @ x``."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.models.message_passing import NativeMessagePassing, compose_grouped, sparse_product


def _general_mult(passing: NativeMessagePassing, h: torch.Tensor, rel: torch.Tensor) -> list[torch.Tensor]:
    """scatter(gather(h) * relation(rel)) per direction through the three SparseRows maps and autograd's mul."""
    return [d.scatter(compose_grouped(d.gather(h), d.pair_norm, d.relation(rel), "mult")) for d in passing.directions]


@pytest.mark.parametrize(("h_grad", "rel_grad"), [(True, True), (True, False), (False, True)])
def test_fused_mult_equals_the_general_path_bit_for_bit(umls, h_grad: bool, rel_grad: bool) -> None:
    passing = NativeMessagePassing(umls.graph, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    h0 = torch.randn(umls.num_entities, 24, generator=gen)
    rel0 = torch.randn(2 * umls.num_relations, 24, generator=gen)
    upstream = [torch.randn(umls.num_entities, 24, generator=gen) for _ in range(2)]
    results = []
    for run in (lambda h, r: list(passing.aggregate(h, r, "mult")), lambda h, r: _general_mult(passing, h, r)):
        h, rel = h0.clone().requires_grad_(h_grad), rel0.clone().requires_grad_(rel_grad)
        outs = run(h, rel)
        torch.autograd.backward(outs, upstream)
        results.append(([o.detach() for o in outs], h.grad, rel.grad))
    (fused, fused_h, fused_rel), (ref, ref_h, ref_rel) = results
    assert all(torch.equal(a, b) for a, b in zip(fused, ref))
    for a, b, wanted in ((fused_h, ref_h, h_grad), (fused_rel, ref_rel, rel_grad)):
        assert (a is None) == (not wanted) and (b is None) == (not wanted)
        if wanted:
            assert torch.equal(a, b) and a.abs().sum() > 0


def test_fused_mult_keeps_only_its_inputs_for_backward(umls) -> None:
    passing = NativeMessagePassing(umls.graph, torch.device("cpu"))
    h = torch.randn(umls.num_entities, 8, requires_grad=True)
    rel = torch.randn(2 * umls.num_relations, 8, requires_grad=True)
    out, _ = passing.aggregate(h, rel, "mult")
    saved = out.grad_fn.saved_tensors
    assert [t.shape for t in saved if t is not None] == [h.shape, rel.shape]  # on CPU no [P, d] tensor of the ~5k (target, relation) pairs


def test_sparse_product_equals_the_plain_product(umls) -> None:
    direction = NativeMessagePassing(umls.graph, torch.device("cpu")).directions[0]
    x = torch.randn(umls.num_entities, 16, generator=torch.Generator().manual_seed(1))
    matrix = direction.gather.matrix  # [P, M]
    expected = matrix @ x
    assert torch.equal(sparse_product(matrix, x), expected)
    out = torch.full_like(expected, float("nan"))  # beta = 0: whatever the buffer held is never read
    assert sparse_product(matrix, x, out) is out and torch.equal(out, expected)
