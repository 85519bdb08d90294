"""One-pass code extraction: the same codes, embeddings and statistics as the separate
latents -> cal_codes -> decode_from_codes -> reconstruction_mse_by_level path, bit for bit
where the old path is exact (codes, embeddings), on a UMLS model trained a few steps and on
FB15k-237 with a random-init model; and the entity blocks behind it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from rq_kg_pipeline.codes.extraction import extract_codes
from rq_kg_pipeline.evaluation.code_stats import code_statistics, reconstruction_mse_by_level
from rq_kg_pipeline.kg.graph import build_graph
from rq_kg_pipeline.models.rqgcn import CPU_SEQUENCE_ROWS, RQGCN, _entity_blocks
from tests.conftest import load_small_kg

SMALL = dict(init_dim=16, gcn_dim=32, gcn_layers=2, seq_len=4, num_code=16, num_quantizers=3, tf_layers=1, att_head=4, num_filters=8, kernel_size=3)


@pytest.fixture(autouse=True)
def two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


def reference(model: RQGCN, graph, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, list[float], float]:
    """The pre-issue-6 extraction: whole latent table in ``batch_size`` calls, then each step apart."""
    model.eval()
    with torch.no_grad():
        ent, _ = model.encode(graph)
        latents = torch.cat([model.latent_sequence(ent[s : s + batch_size]) for s in range(0, ent.shape[0], batch_size)])
        codes = model.quantizer.cal_codes(latents)
        embeddings = model.quantizer._sum_levels(model.quantizer._gather(codes))  # the gather-and-sum decode
        mse = reconstruction_mse_by_level(latents, model.quantizer.level_code_vectors(codes))
    return codes, embeddings, mse, float(latents.pow(2).mean())


def trained_umls_model(umls) -> RQGCN:
    torch.manual_seed(0)
    model = RQGCN(umls.num_entities, umls.num_relations, **SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    heads, rels, tails = umls.train[:256].unbind(dim=1)
    for _ in range(5):  # k-means init on the first call, then a few real steps
        out = model(umls.graph, heads, rels)
        loss = torch.nn.functional.cross_entropy(out.logits, tails) + out.quant.loss + out.recon_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def check_same_as_reference(model: RQGCN, graph, batch_size: int) -> None:
    codes, embeddings, mse, mean_square = reference(model, graph, batch_size)
    got = extract_codes(model, graph, batch_size=batch_size)
    assert torch.equal(got.codes, codes)
    assert torch.equal(got.embeddings, embeddings)
    assert torch.equal(model.cal_allent_codes(graph, batch_size), codes)
    assert torch.equal(model.cal_allent_codes_emds(graph, batch_size), embeddings)
    stats = code_statistics(codes, model.num_code)
    assert all(got.statistics[k] == v for k, v in stats.items())
    # The search's float32 sums per block against float64 sums (FB15k-237, trained: 5e-7 to 2e-6 apart).
    for q, value in enumerate(mse):
        assert got.statistics[f"reconstruction_mse_l{q + 1}"] == pytest.approx(value, rel=1e-5)
    assert got.statistics["latent_mean_square"] == pytest.approx(mean_square, rel=1e-5)


@pytest.mark.parametrize("block_rows", [16, CPU_SEQUENCE_ROWS])
def test_extraction_matches_the_separate_path_on_trained_umls(umls, monkeypatch, block_rows: int) -> None:
    model = trained_umls_model(umls)
    assert bool(model.quantizer.initialised)
    monkeypatch.setattr("rq_kg_pipeline.models.rqgcn.CPU_SEQUENCE_ROWS", block_rows)
    for batch_size in (7, 50, 4096):
        check_same_as_reference(model, umls.graph, batch_size)


def test_extraction_matches_the_separate_path_on_fb15k237_random_init(fb15k237_dir, monkeypatch) -> None:
    kg = load_small_kg(fb15k237_dir)
    graph = build_graph(kg.train, kg.num_entities, kg.num_relations)
    torch.manual_seed(1)
    model = RQGCN(kg.num_entities, kg.num_relations, init_dim=16, gcn_dim=32, gcn_layers=1, seq_len=4, num_code=256,
                  num_quantizers=2, tf_layers=1, att_head=4, num_filters=4, kernel_size=3, kmeans_init=False)
    monkeypatch.setattr("rq_kg_pipeline.models.rqgcn.CPU_SEQUENCE_ROWS", 1000)  # 14,541 entities: few blocks
    check_same_as_reference(model, graph, 4096)  # batches 3 x 4096 + 2253: blocks of 1000 to 1999 entities


@pytest.mark.parametrize(("n", "batch_size"), [(14541, 4096), (14541, 256), (100, 4096), (513, 512), (1, 7), (300, 260)])
def test_entity_blocks_cover_in_order_within_batches(n: int, batch_size: int) -> None:
    blocks = _entity_blocks(n, batch_size, torch.device("cpu"))
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    for start, stop in blocks:
        assert start // batch_size == (stop - 1) // batch_size  # never across a caller's batch
        batch_len = min(batch_size, n - start // batch_size * batch_size)
        assert min(CPU_SEQUENCE_ROWS, batch_len) <= stop - start < 2 * CPU_SEQUENCE_ROWS or stop - start == batch_len
    assert _entity_blocks(n, batch_size, torch.device("meta")) == [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
