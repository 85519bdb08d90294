"""CompGCN encoder: compositions, layer semantics on a hand-checked graph, native vs DGL parity on UMLS."""

from __future__ import annotations

import math

import pytest
import torch

from rq_kg_pipeline.kg.graph import build_graph
from rq_kg_pipeline.models.compgcn import CompGCNEncoder
from rq_kg_pipeline.models.message_passing import circular_correlation, compose

COMPS = ["mult", "sub", "corr"]


def test_circular_correlation_matches_definition() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(3, 7), torch.randn(3, 7)
    expected = torch.stack([torch.stack([(a[n] * b[n].roll(-k)).sum() for k in range(7)]) for n in range(3)])
    torch.testing.assert_close(circular_correlation(a, b), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["native", "dgl"])
@pytest.mark.parametrize("comp", COMPS)
def test_single_layer_matches_hand_computation(backend: str, comp: str) -> None:
    """Triples (0, r0, 1), (2, r1, 1): entity 1 gets two original-direction messages, 0 and 2 inverse ones."""
    torch.manual_seed(1)
    graph = build_graph(torch.tensor([[0, 0, 1], [2, 1, 1]]), num_entities=3, num_relations=2)
    enc = CompGCNEncoder(3, 2, init_dim=4, gcn_dim=5, gcn_layers=1, comp=comp, dropout=0.0, backend=backend).eval()
    ent, rel = enc(graph)
    layer = enc.layers[0]
    h, r = enc.ent_init.detach(), enc.rel_init.detach()
    n = 1 / math.sqrt(2)  # deg(1) = 2, deg(0) = deg(2) = 1
    agg_orig = torch.zeros(3, 4)
    agg_orig[1] = n * compose(h[0], r[0], comp) + n * compose(h[2], r[1], comp)
    agg_inv = torch.zeros(3, 4)
    agg_inv[0] = n * compose(h[1], r[2], comp)  # inverse of r0 is r0 + R = 2
    agg_inv[2] = n * compose(h[1], r[3], comp)
    loop = compose(h, layer.loop_rel.detach(), comp)
    pre = (agg_orig @ layer.w_orig + agg_inv @ layer.w_inv + loop @ layer.w_loop) / 3
    expected = torch.tanh(pre / math.sqrt(1 + layer.bn.eps))  # BN in eval with fresh stats
    torch.testing.assert_close(ent, expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rel, (r @ layer.w_rel).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("comp", COMPS)
def test_native_and_dgl_agree_on_umls(umls, comp: str) -> None:
    torch.manual_seed(2)
    kw = dict(init_dim=24, gcn_dim=32, gcn_layers=2, comp=comp, dropout=0.0)
    native = CompGCNEncoder(umls.num_entities, umls.num_relations, backend="native", **kw)
    dgl = CompGCNEncoder(umls.num_entities, umls.num_relations, backend="dgl", **kw)
    dgl.load_state_dict(native.state_dict())
    w_ent = torch.randn(umls.num_entities, 32)
    w_rel = torch.randn(2 * umls.num_relations, 32)
    outputs, grads = [], []
    for enc in (native, dgl):
        ent, rel = enc(umls.graph)  # training mode: batch-norm uses batch statistics
        ((ent * w_ent).sum() + (rel * w_rel).sum()).backward()
        outputs.append((ent.detach(), rel.detach()))
        grads.append({name: p.grad for name, p in enc.named_parameters()})
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], rtol=0, atol=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert g is not None and g.abs().sum() > 0, name
        if comp == "sub" and name.endswith("loop_rel"):
            # h - loop_rel shifts every row by one vector, which batch norm removes: the exact
            # gradient is 0, so both backends hold only rounding noise (in different orders).
            scale = grads[0][name.replace("loop_rel", "w_loop")].abs().max()
            assert g.abs().max() < 1e-3 * scale and grads[1][name].abs().max() < 1e-3 * scale, name
            continue
        torch.testing.assert_close(g, grads[1][name], rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_graph_cache_is_per_graph_object(umls) -> None:
    enc = CompGCNEncoder(umls.num_entities, umls.num_relations, init_dim=8, gcn_dim=8, gcn_layers=1, backend="dgl")
    assert enc._passing(umls.graph) is enc._passing(umls.graph)
    other = build_graph(umls.train[:100], umls.num_entities, umls.num_relations)
    assert enc._passing(other) is not enc._passing(umls.graph)
    # Different graphs give different outputs: the cache does not serve a stale graph.
    enc.eval()
    assert not torch.allclose(enc(other)[0], enc(umls.graph)[0])


def test_pickling_drops_the_cache(umls) -> None:
    import copy

    enc = CompGCNEncoder(umls.num_entities, umls.num_relations, init_dim=8, gcn_dim=8, gcn_layers=1)
    enc(umls.graph)
    clone = copy.deepcopy(enc)
    assert clone._passing_cache == {} and len(enc._passing_cache) == 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"backend": "pyg"}, "backend"),
        ({"comp": "add"}, "comp"),
        ({"activation": "swish"}, "activation"),
        ({"gcn_layers": 0}, "gcn_layers"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CompGCNEncoder(10, 2, **kwargs)


def test_graph_size_mismatch_is_rejected(umls) -> None:
    enc = CompGCNEncoder(umls.num_entities + 1, umls.num_relations, init_dim=8, gcn_dim=8)
    with pytest.raises(ValueError, match="num_entities"):
        enc(umls.graph)
