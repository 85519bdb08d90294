"""RQGCN: the decoder reads the quantized sequence, training and extraction share one path, a UMLS smoke run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rq_kg_pipeline.models.rqgcn import RQGCN


def _initialised(model: RQGCN, umls) -> RQGCN:
    """One training-mode forward (no optimiser) so the codebooks are k-means-initialised."""
    with torch.no_grad():
        model.train()
        model(umls.graph, torch.arange(umls.num_entities), torch.zeros(umls.num_entities, dtype=torch.long))
    return model


def _batch(umls, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    h, r, _ = umls.train[:n].unbind(dim=1)
    return h, r


def test_forward_shapes_and_unique_heads(umls, make_model) -> None:
    torch.manual_seed(0)
    model = make_model().eval()
    heads, rels = _batch(umls)
    out = model(umls.graph, heads, rels)
    unique = torch.unique(heads)
    assert out.logits.shape == (64, umls.num_entities)
    assert out.quant.indices.shape == (unique.numel(), 4, 3)
    assert out.recon_loss.ndim == 0 and out.quant.loss.ndim == 0
    # Duplicate heads are quantized once: equal (head, rel) pairs get equal logits.
    dup = model(umls.graph, torch.tensor([heads[0], heads[0]]), torch.tensor([rels[0], rels[0]]))
    assert dup.quant.indices.shape[0] == 1
    assert torch.equal(dup.logits[0], dup.logits[1])


def test_logits_are_a_function_of_the_codes(umls, make_model) -> None:
    """In eval mode the query vector is exactly aggregate(decode(codes)): nothing unquantized leaks in."""
    torch.manual_seed(1)
    model = _initialised(make_model(), umls).eval()
    heads, rels = _batch(umls)
    out = model(umls.graph, heads, rels)
    ent, rel = model.encode(umls.graph)
    unique, where = torch.unique(heads, return_inverse=True)
    from_codes = model.entity_vectors_from_codes(out.quant.indices)[where]
    assert torch.equal(model.score(from_codes, rels, rel, ent), out.logits)
    # Moving one level's chosen code vectors (here the finest level) changes the logits,
    # while the unquantized reference path does not see the codebook at all.
    continuous = model.continuous_query_vectors(ent[unique])
    with torch.no_grad():
        model.quantizer.codebooks[2] += 0.5 * torch.randn_like(model.quantizer.codebooks[2])
    changed = model(umls.graph, heads, rels)
    assert torch.equal(changed.quant.indices[..., :2], out.quant.indices[..., :2])
    assert not torch.allclose(changed.logits, out.logits, atol=1e-4)
    assert torch.equal(model.continuous_query_vectors(ent[unique]), continuous)
    # Altering the chosen indices changes the decoded query vectors.
    altered = out.quant.indices.clone()
    altered[..., 0] = (altered[..., 0] + 1) % model.num_code
    assert not torch.allclose(model.entity_vectors_from_codes(altered), model.entity_vectors_from_codes(out.quant.indices))


def _tokeniser_grad(model: RQGCN, umls) -> tuple[torch.Tensor, torch.Tensor]:
    heads, rels = _batch(umls)
    model.zero_grad(set_to_none=False)
    out = model(umls.graph, heads, rels)
    F.binary_cross_entropy_with_logits(out.logits, torch.rand_like(out.logits)).backward()  # link-prediction loss only
    return model.to_sequence.weight.grad.clone(), model.encoder.ent_init.grad.clone()


def test_straight_through_gradient_reaches_encoder(umls, make_model, monkeypatch) -> None:
    """The tokeniser (entity -> latent sequence) influences the logits only through z_q."""
    torch.manual_seed(2)
    model = _initialised(make_model(gcn_dropout=0.0, tf_dropout=0.0, conve_dropout=(0.0, 0.0, 0.0)), umls)
    tok_grad, enc_grad = _tokeniser_grad(model, umls)
    assert tok_grad.abs().sum() > 0
    assert enc_grad.abs().sum() > 0
    # Control: cut the straight-through path and the tokeniser gets no gradient from the logits.
    quantize = model.quantizer.quantize
    monkeypatch.setattr(model.quantizer, "quantize", lambda z, valid=None: quantize(z, valid)._replace(z_q=quantize(z, valid).z_q.detach()))
    tok_grad_cut, _ = _tokeniser_grad(model, umls)
    assert tok_grad_cut.abs().sum() == 0


def test_training_and_extraction_give_the_same_codes(umls, make_model) -> None:
    torch.manual_seed(3)
    model = _initialised(make_model(), umls)
    model.train()
    codes = model.cal_allent_codes(umls.graph, batch_size=50)  # chunked, eval mode inside
    assert model.training  # mode restored
    assert codes.shape == (umls.num_entities, 4, 3) and codes.dtype == torch.int64
    model.eval()
    everyone = torch.arange(umls.num_entities)
    out = model(umls.graph, everyone, torch.zeros_like(everyone))  # forward's quantize path, with autograd on
    assert torch.equal(out.quant.indices, codes)
    assert torch.equal(model.cal_allent_codes(umls.graph), codes)
    emds = model.cal_allent_codes_emds(umls.graph, batch_size=7)
    assert torch.equal(emds, model.quantizer.decode_from_codes(codes))
    assert torch.equal(out.quant.z_q.detach(), emds)
    # latent_sequence is bit-identical with and without autograd (no eval-only fast path).
    ent, _ = model.encode(umls.graph)
    with torch.no_grad():
        frozen = model.latent_sequence(ent)
    assert torch.equal(model.latent_sequence(ent).detach(), frozen)


def test_state_dict_round_trip_keeps_codes(umls, make_model, tmp_path) -> None:
    torch.manual_seed(6)
    model = _initialised(make_model(), umls)
    codes = model.cal_allent_codes(umls.graph)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    loaded = make_model()
    assert not bool(loaded.quantizer.initialised)
    loaded.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert bool(loaded.quantizer.initialised)
    assert torch.equal(loaded.cal_allent_codes(umls.graph), codes)
    _initialised(loaded, umls)  # a training call after loading does not re-run k-means
    assert torch.equal(loaded.quantizer.codebooks, model.quantizer.codebooks)


@pytest.mark.parametrize("comp", ["mult", "sub", "corr"])
def test_runs_under_bf16_autocast(umls, make_model, comp: str) -> None:
    """The training loop may use bf16 autocast: mixed dtypes must not break forward or backward."""
    torch.manual_seed(7)
    model = make_model(comp=comp)
    heads, rels = _batch(umls)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(umls.graph, heads, rels)
    (out.logits.float().mean() + out.quant.loss + out.recon_loss).backward()
    assert out.quant.indices.dtype == torch.int64
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_single_quantizer_is_vq(umls, make_model) -> None:
    torch.manual_seed(4)
    model = _initialised(make_model(num_quantizers=1), umls)
    codes = model.cal_allent_codes(umls.graph)
    assert codes.shape == (umls.num_entities, 4, 1)
    assert model.entity_vectors_from_codes(codes).shape == (umls.num_entities, 32)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_quantizers": 0}, "num_quantizers"),
        ({"num_code": 1}, "num_code"),
        ({"seq_len": 0}, "seq_len"),
        ({"att_head": 5}, "att_head"),
        ({"k_h": 4, "k_w": 4}, "k_h"),
        ({"k_h": 4}, "k_w"),
        ({"kernel_size": 9}, "kernel_size"),
        ({"backend": "pyg"}, "backend"),
        ({"comp": "rotate"}, "comp"),
        ({"tf_layers": -1}, "tf_layers"),
        ({"conve_dropout": (0.1, 0.2)}, "conve_dropout"),
    ],
)
def test_invalid_parameters_are_rejected(make_model, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_model(**kwargs)


def test_invalid_batches_are_rejected(umls, make_model) -> None:
    model = make_model()
    with pytest.raises(ValueError, match="rels"):
        model(umls.graph, torch.tensor([0]), torch.tensor([2 * umls.num_relations]))
    with pytest.raises(ValueError, match="heads"):
        model(umls.graph, torch.tensor([umls.num_entities]), torch.tensor([0]))
    with pytest.raises(ValueError, match="seq_len"):
        model.entity_vectors_from_codes(torch.zeros(2, 5, 3, dtype=torch.long))


def _one_to_n(umls) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique (head, rel) queries of the training triples, inverses included, with 1-N label rows."""
    h, r, t = umls.train.unbind(dim=1)
    heads = torch.cat([h, t])
    rels = torch.cat([r, r + umls.num_relations])
    tails = torch.cat([t, h])
    pairs, row = torch.unique(torch.stack([heads, rels], dim=1), dim=0, return_inverse=True)
    labels = torch.zeros(pairs.shape[0], umls.num_entities)
    labels[row, tails] = 1.0
    return pairs[:, 0], pairs[:, 1], labels


@pytest.mark.parametrize("backend", ["native", "dgl"])
def test_training_smoke_on_umls(umls, make_model, backend: str) -> None:
    torch.manual_seed(5)
    model = make_model(backend=backend)
    heads, rels, labels = _one_to_n(umls)
    smoothed = 0.9 * labels + 0.1 / umls.num_entities
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    bce_history, util_history = [], []
    for _ in range(25):
        out = model(umls.graph, heads, rels)
        bce = F.binary_cross_entropy_with_logits(out.logits, smoothed)
        loss = bce + out.quant.loss + out.recon_loss
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        bce_history.append(bce.item())
        util_history.append(out.quant.utilisation.min().item())
    assert all(torch.isfinite(torch.tensor(bce_history)))
    assert sum(bce_history[-3:]) / 3 < 0.5 * bce_history[0]
    assert min(util_history) > 0.5  # k-means init + revival keep the codebooks in use
