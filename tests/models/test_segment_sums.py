"""The Triton segment sums (on CUDA, or in Triton's CPU interpreter without a GPU) against index_add_
references: chunking of hub rows, empty rows, dtypes, and CompGCN's mult aggregation with both
gradients on UMLS."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.kg.graph import KGGraph, build_graph
from rq_kg_pipeline.models import triton_support
from rq_kg_pipeline.models.message_passing import NativeMessagePassing
from rq_kg_pipeline.models.segment_sums import SegmentPlan, segment_sums


def _umls_slice(umls) -> KGGraph:
    """The graph of UMLS's first 800 training triples: real degrees, small enough for Triton's interpreter."""
    return build_graph(umls.train[:800], umls.num_entities, umls.num_relations)


def _skewed_edges(gen: torch.Generator, num_rows: int = 9) -> torch.Tensor:
    """Output rows of 300 edges: one hub row with 150 (several chunks), rows 0 and 5 without edges."""
    rows = torch.cat([torch.full((150,), 3), torch.randint(1, num_rows, (150,), generator=gen)])
    rows[rows == 5] = 3
    return rows[torch.randperm(rows.numel(), generator=gen)]


def test_plan_cuts_rows_into_bounded_chunks() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = _skewed_edges(gen)
    plan = SegmentPlan.build(rows, torch.arange(300), torch.arange(300), torch.ones(300), num_rows=9, chunk=64)
    starts = plan.chunk_start.long()
    sizes = starts[1:] - starts[:-1]
    assert int(starts[-1]) == 300 and bool((sizes >= 1).all() and (sizes <= 64).all())
    counts = torch.bincount(rows, minlength=9)
    ordered_rows = rows[torch.sort(rows, stable=True).indices]
    chunk_rows = ordered_rows[starts[:-1]]  # every chunk lies in one row: its first and last edge agree
    assert torch.equal(chunk_rows, ordered_rows[starts[1:] - 1])
    assert torch.bincount(chunk_rows, minlength=9).tolist() == ((counts + 63) // 64).tolist()  # the hub: 3 chunks
    slots = plan.chunk_slot.long()
    direct = slots >= 0  # a row's only chunk writes the row itself
    assert torch.equal(slots[direct], chunk_rows[direct])
    assert plan.fixup_rows.tolist() == [0, 3, 5]  # rows without edges, and the hub
    assert plan.fixup_partials.tolist() == [0, 0, 3, 3] and plan.num_partials == 3
    assert (-1 - slots[~direct]).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="chunk"):
        SegmentPlan.build(rows, rows, rows, torch.ones(300), num_rows=9, chunk=0)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_segment_sums_equal_index_add(kernel_device, dtype: torch.dtype, tol: float) -> None:
    gen = torch.Generator().manual_seed(1)
    rows = _skewed_edges(gen)
    a, b = torch.randn(40, 13, generator=gen), torch.randn(7, 13, generator=gen)  # width 13: masked columns
    ia, ib = torch.randint(0, 40, (300,), generator=gen), torch.randint(0, 7, (300,), generator=gen)
    w = torch.rand(300, generator=gen)
    a, b = a.to(dtype), b.to(dtype)
    expected = torch.zeros(9, 13).index_add_(0, rows, w[:, None] * a[ia].float() * b[ib].float())
    plan = SegmentPlan.build(rows, ia, ib, w, num_rows=9, chunk=64).to(kernel_device)
    got = segment_sums(plan, a.to(kernel_device), b.to(kernel_device)).cpu()
    assert got.dtype == torch.float32 and torch.allclose(got, expected, rtol=tol, atol=tol)
    assert torch.equal(got[0], torch.zeros(13)) and torch.equal(got[5], torch.zeros(13))
    with pytest.raises(ValueError, match="same width"):
        segment_sums(plan, a, b[:, :5])


def test_triton_mult_equals_the_sparse_route(kernel_device, umls) -> None:
    """On UMLS: both directions' aggregation and the gradients of h and of the relation table."""
    graph, device = _umls_slice(umls), kernel_device
    sparse, fused = NativeMessagePassing(graph, device, triton=False), NativeMessagePassing(graph, device, triton=True)
    gen = torch.Generator().manual_seed(2)
    h0 = torch.randn(graph.num_entities, 20, generator=gen).to(device)
    rel0 = torch.randn(2 * graph.num_relations, 20, generator=gen).to(device)
    upstream = [torch.randn(graph.num_entities, 20, generator=gen).to(device) for _ in range(2)]
    results = []
    for passing in (sparse, fused):
        h, rel = h0.clone().requires_grad_(), rel0.clone().requires_grad_()
        outs = passing.aggregate(h, rel, "mult")
        torch.autograd.backward(outs, upstream)
        results.append([*outs, h.grad, rel.grad])
    for want, got in zip(*results):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5) and want.abs().sum() > 0
    h = h0.clone().requires_grad_()
    again = fused.aggregate(h, rel0, "mult")  # the same sums on every run; no relation gradient asked
    torch.autograd.backward(again, upstream)
    assert torch.equal(again[0], results[1][0]) and torch.equal(h.grad, results[1][2])
    # sub has no Triton route: it takes the sparse one whatever the setting
    assert all(torch.equal(x, y) for x, y in zip(fused.aggregate(h0, rel0, "sub"), sparse.aggregate(h0, rel0, "sub")))


def test_triton_mult_stores_the_autocast_dtype(kernel_device, umls) -> None:
    """Under bf16 autocast the sums are stored as bf16: the float32 result rounded, nothing else
    (within one bf16 step: Triton's interpreter truncates where the GPU rounds to nearest)."""
    device = kernel_device
    passing = NativeMessagePassing(_umls_slice(umls), device, triton=True)
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(umls.num_entities, 16, generator=gen).to(device).requires_grad_()
    rel = torch.randn(2 * umls.num_relations, 16, generator=gen).to(device)
    plain = passing.aggregate(h, rel, "mult")
    with torch.autocast(device.type, dtype=torch.bfloat16):
        rounded = passing.aggregate(h, rel, "mult")
    assert all(r.dtype == torch.bfloat16 and torch.allclose(r.float(), p, rtol=2**-7, atol=0) for r, p in zip(rounded, plain))
    torch.autograd.backward(rounded, [torch.ones_like(r) for r in rounded])  # bf16 gradients in, float32 out
    assert h.grad.dtype == torch.float32 and h.grad.abs().sum() > 0


def test_triton_route_is_default_only_on_cuda_and_needs_triton(umls, monkeypatch) -> None:
    assert NativeMessagePassing(umls.graph, torch.device("cpu")).triton is None
    monkeypatch.setattr(triton_support, "available", lambda: False)
    with pytest.raises(ValueError, match="needs Triton"):
        NativeMessagePassing(umls.graph, torch.device("cpu"), triton=True)
