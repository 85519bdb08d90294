"""The training graph: inverse edges, CompGCN norms, determinism, pickle-free save/load, DGL."""

from __future__ import annotations

import pickle
import sys

import pytest
import torch
from kedro.io import DatasetError

from rq_kg_pipeline.datasets import DGLGraphDataset, KGGraphDataset
from rq_kg_pipeline.kg.dgl_import import from_dgl, import_dgl, to_dgl
from rq_kg_pipeline.kg.graph import build_graph


def test_inverse_edges_and_norms_on_a_hand_made_graph():
    # a -r0-> b, a -r1-> c  (M = 3, R = 2)
    graph = build_graph(torch.tensor([[0, 0, 1], [0, 1, 2]]), num_entities=3, num_relations=2)
    edges = set(zip(graph.src.tolist(), graph.dst.tolist(), graph.rel.tolist()))
    assert edges == {(0, 1, 0), (1, 0, 2), (0, 2, 1), (2, 0, 3)}
    assert graph.dst.tolist() == sorted(graph.dst.tolist())
    # in-degree with inverses: a = 2, b = 1, c = 1 -> norm(u, v) = 1 / sqrt(deg u * deg v)
    expected = {(0, 1): 2**-0.5, (1, 0): 2**-0.5, (0, 2): 2**-0.5, (2, 0): 2**-0.5}
    for s, d, n in zip(graph.src.tolist(), graph.dst.tolist(), graph.norm.tolist()):
        assert n == pytest.approx(expected[(s, d)])


def test_umls_graph_has_every_triple_both_ways(umls):
    graph = umls.graph
    assert graph.num_edges == 2 * len(umls.train)
    forward = {(h, r, t) for h, r, t in umls.train.tolist()}
    for s, d, r in zip(graph.src.tolist(), graph.dst.tolist(), graph.rel.tolist()):
        if r < umls.num_relations:
            assert (s, r, d) in forward
        else:
            assert (d, r - umls.num_relations, s) in forward
    degree = graph.in_degrees().float()
    assert torch.allclose(graph.norm, (degree[graph.src] * degree[graph.dst]).rsqrt())


def test_graph_is_deterministic_under_row_order(umls):
    shuffled = umls.train[torch.randperm(len(umls.train), generator=torch.Generator().manual_seed(3))]
    other = build_graph(shuffled, umls.num_entities, umls.num_relations)
    for name in ("src", "dst", "rel", "norm"):
        assert torch.equal(getattr(other, name), getattr(umls.graph, name))


def test_graph_file_round_trip_loads_without_pickle(tmp_path, umls):
    dataset = KGGraphDataset(filepath=str(tmp_path / "graph.pt"))
    dataset.save(umls.graph)
    loaded = dataset.load()  # torch.load(weights_only=True) inside
    assert loaded.num_entities == umls.num_entities and loaded.num_relations == umls.num_relations
    assert torch.equal(loaded.src, umls.graph.src) and torch.equal(loaded.norm, umls.graph.norm)
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def test_graph_file_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "graph.pt"
    torch.save({"src": torch.zeros(1), "evil": pickle.loads(pickle.dumps(ValueError("x")))}, path)
    with pytest.raises(DatasetError, match="Weights only load failed"):
        KGGraphDataset(filepath=str(path)).load()


def test_dgl_import_helper_stubs_graphbolt_and_dgl_round_trips(tmp_path, umls):
    dgl = import_dgl()
    assert "dgl.graphbolt" in sys.modules
    g = to_dgl(umls.graph)
    assert isinstance(g, dgl.DGLGraph)
    assert g.num_nodes() == umls.num_entities and g.num_edges() == umls.graph.num_edges
    dataset = DGLGraphDataset(filepath=str(tmp_path / "graph.dgl"))
    dataset.save(g)
    back = from_dgl(dataset.load(), umls.num_relations)
    for name in ("src", "dst", "rel", "norm"):
        assert torch.equal(getattr(back, name), getattr(umls.graph, name))
