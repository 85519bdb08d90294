"""RQCodebook: loss formula, straight-through gradient, exact decoding, k-means init, dead-code revival,
and the fast path (chunked search, custom backward, no host syncs) against a plain-autograd reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rq_kg_pipeline.models.rq_codebook import RQCodebook, nearest_code, residual_search


def _fixed_codebook(beta: float = 0.25) -> RQCodebook:
    """Q=2, K=2, D=2 with known codes; no data-dependent init, no revival."""
    rq = RQCodebook(2, 2, num_quantizers=2, beta=beta, kmeans_init=False, revive_dead_codes=False)
    with torch.no_grad():
        rq.codebooks.copy_(torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 0.5], [0.0, -0.5]]]))
    return rq


def test_loss_and_gradients_match_hand_computation() -> None:
    beta = 0.25
    rq = _fixed_codebook(beta)
    z = torch.tensor([[[1.9, 0.4], [0.2, -0.6]]], requires_grad=True)  # [B=1, L=2, D=2]
    out = rq.quantize(z)
    # Level 1: (1.9, 0.4) -> code 1 (2, 0); (0.2, -0.6) -> code 0 (0, 0).
    # Level 2 residuals (-0.1, 0.4) -> code 0 (0, .5); (0.2, -0.6) -> code 1 (0, -.5).
    assert out.indices.tolist() == [[[1, 0], [0, 1]]]
    r1 = torch.tensor([[1.9, 0.4], [0.2, -0.6]])
    e1 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    r2 = r1 - e1
    e2 = torch.tensor([[0.0, 0.5], [0.0, -0.5]])
    level1 = (1 + beta) * ((r1 - e1) ** 2).mean()  # codebook + beta * commitment, same value
    level2 = (1 + beta) * ((r2 - e2) ** 2).mean()
    torch.testing.assert_close(out.level_losses, torch.stack([level1, level2]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.loss, level1 + level2, rtol=0, atol=1e-6)
    out.loss.backward()
    # Codebook term (weight 1, residual detached) moves only the chosen codes: 2 (e - r) / (N * D).
    expected_codes = torch.zeros(2, 2, 2)
    expected_codes[0, 1] = 2 * (e1[0] - r1[0]) / 4
    expected_codes[0, 0] = 2 * (e1[1] - r1[1]) / 4
    expected_codes[1, 0] = 2 * (e2[0] - r2[0]) / 4
    expected_codes[1, 1] = 2 * (e2[1] - r2[1]) / 4
    torch.testing.assert_close(rq.codebooks.grad, expected_codes, rtol=0, atol=1e-6)
    # Commitment terms (weight beta, codes detached) reach z from both levels: r2 = z - sg[e1].
    expected_z = beta * 2 * ((r1 - e1) + (r2 - e2)) / 4
    torch.testing.assert_close(z.grad[0], expected_z, rtol=0, atol=1e-6)


def test_straight_through_value_and_gradient() -> None:
    torch.manual_seed(0)
    rq = RQCodebook(8, 6, num_quantizers=3, kmeans_init=False, revive_dead_codes=False)
    rq.eval()
    z = torch.randn(4, 5, 6, requires_grad=True)
    out = rq.quantize(z)
    assert torch.equal(out.z_q, rq.cal_code_emds(z))  # value: exactly the code sum
    weights = torch.randn(4, 5, 6)
    (out.z_q * weights).sum().backward()
    assert torch.equal(z.grad, weights)  # gradient: identity
    assert rq.codebooks.grad is None  # the codebook learns from its loss only


def test_blockwise_decode_and_one_search_sums_equal_the_gather_sum_bit_for_bit() -> None:
    torch.manual_seed(11)
    rq = RQCodebook(64, 24, num_quantizers=4, kmeans_init=False, max_elements=24 * 40)  # 40-row update blocks
    with torch.no_grad():
        rq.codebooks.normal_()
    z = torch.randn(9, 13, 24)  # 117 rows: several blocks and a short last one
    codes = rq.cal_codes(z)
    gathered = rq._sum_levels(rq.level_code_vectors(codes))  # [B, L, D] the gather-and-sum decode
    with torch.no_grad():
        fast = rq.decode_from_codes(codes)
    assert torch.equal(fast, gathered)
    assert torch.equal(rq.decode_from_codes(codes.int()), gathered)  # any integer dtype
    found = rq.search(z)  # codes and sums of one search
    assert torch.equal(found.indices.view(9, 13, 4), codes) and torch.equal(found.summed.view(9, 13, 24), gathered)
    # With autograd on, decoding stays differentiable w.r.t. the codebooks.
    rq.decode_from_codes(codes).sum().backward()
    assert torch.equal(rq.codebooks.grad.sum(dim=2) != 0, torch.stack([torch.bincount(codes[..., q].flatten(), minlength=64) > 0 for q in range(4)]))


def test_decode_round_trip_is_exact_and_matches_quantize() -> None:
    torch.manual_seed(1)
    rq = RQCodebook(16, 8, num_quantizers=3)
    z = torch.randn(6, 5, 8)
    rq.train()
    rq.quantize(z)  # k-means init
    rq.eval()
    codes = rq.cal_codes(z)
    assert codes.shape == (6, 5, 3) and codes.dtype == torch.int64
    assert torch.equal(rq.decode_from_codes(codes), rq.cal_code_emds(z))
    assert torch.equal(rq.quantize(z).indices, codes)
    per_level = rq.level_code_vectors(codes)  # [B, L, Q, D]
    assert per_level.shape == (6, 5, 3, 8)
    for q in range(3):
        assert torch.equal(per_level[:, :, q], rq.codebooks[q][codes[..., q]])
    manual = rq.codebooks[0][codes[..., 0]] + rq.codebooks[1][codes[..., 1]] + rq.codebooks[2][codes[..., 2]]
    assert torch.equal(rq.decode_from_codes(codes), manual)
    # Each level picks the nearest code to its residual.
    residual = z.reshape(-1, 8)
    for q in range(3):
        brute = torch.cdist(residual, rq.codebooks[q].detach()).argmin(dim=1)
        assert torch.equal(codes.reshape(-1, 3)[:, q], brute)
        residual = residual - rq.codebooks[q].detach()[brute]


def test_nearest_code_chunking_matches_unchunked() -> None:
    torch.manual_seed(2)
    x, codes = torch.randn(1000, 5), torch.randn(37, 5)
    assert torch.equal(nearest_code(x, codes, max_elements=37 * 3), nearest_code(x, codes))
    assert torch.equal(nearest_code(x, codes), torch.cdist(x, codes).argmin(dim=1))


def test_q1_is_plain_vq() -> None:
    torch.manual_seed(3)
    rq = RQCodebook(10, 4, num_quantizers=1)
    z = torch.randn(3, 7, 4)
    out = rq.quantize(z)
    assert out.indices.shape == (3, 7, 1)
    assert torch.equal(out.z_q, rq.codebooks[0][out.indices[..., 0]].detach())
    z_q, idx, loss = rq(z)
    assert idx.shape == (3, 7, 1) and loss.ndim == 0 and z_q.shape == z.shape


def _clustered(n_per: int, centres: torch.Tensor) -> torch.Tensor:
    points = centres.repeat_interleave(n_per, dim=0)
    return (points + 0.05 * torch.randn_like(points)).unsqueeze(1)  # [N, 1, D]


def test_kmeans_init_runs_once_and_beats_random_init() -> None:
    torch.manual_seed(4)
    centres = 3.0 * torch.randn(8, 6)
    data = _clustered(40, centres)
    random_init = RQCodebook(8, 6, num_quantizers=1, kmeans_init=False, revive_dead_codes=False)
    kmeans_init = RQCodebook(8, 6, num_quantizers=1, revive_dead_codes=False)
    assert not bool(kmeans_init.initialised)
    util_random = random_init.quantize(data).utilisation[0]
    out = kmeans_init.quantize(data)
    assert bool(kmeans_init.initialised)
    assert out.utilisation[0] == 1.0 > util_random
    err_kmeans = (data - out.z_q).pow(2).mean()
    err_random = (data - random_init.quantize(data).z_q).pow(2).mean()
    assert err_kmeans < 0.25 * err_random
    # A second training call (other data) does not re-initialise.
    before = kmeans_init.codebooks.detach().clone()
    kmeans_init.quantize(torch.randn(50, 1, 6))
    assert torch.equal(kmeans_init.codebooks.detach(), before)
    # The flag travels with the state dict: a loaded codebook is not re-initialised.
    loaded = RQCodebook(8, 6, num_quantizers=1, revive_dead_codes=False)
    loaded.load_state_dict(kmeans_init.state_dict())
    loaded.quantize(torch.randn(50, 1, 6))
    assert torch.equal(loaded.codebooks.detach(), before)


def test_kmeans_init_with_fewer_vectors_than_codes() -> None:
    torch.manual_seed(5)
    rq = RQCodebook(32, 4, num_quantizers=2)
    z = torch.randn(3, 2, 4)  # 6 vectors < 32 codes: sampled with replacement + noise
    out = rq.quantize(z)
    assert torch.isfinite(rq.codebooks).all()
    assert torch.unique(rq.codebooks[0].detach(), dim=0).shape[0] == 32  # no exact duplicates
    assert (z - out.z_q).pow(2).mean() < 1e-2


def test_kmeans_init_is_deterministic_given_seed() -> None:
    z = torch.randn(20, 3, 5, generator=torch.Generator().manual_seed(0))
    books = []
    for _ in range(2):
        torch.manual_seed(6)
        rq = RQCodebook(8, 5, num_quantizers=2)
        rq.quantize(z)
        books.append(rq.codebooks.detach().clone())
    assert torch.equal(books[0], books[1])


def _collapsed(revive: bool) -> RQCodebook:
    rq = RQCodebook(16, 4, num_quantizers=2, kmeans_init=False, revive_dead_codes=revive, dead_code_patience=3)
    with torch.no_grad():
        rq.codebooks[0].copy_(torch.eye(4).repeat(4, 1))  # level 1: a fixed spread of codes
        rq.codebooks[1].fill_(10.0)  # level 2: collapsed, every code identical and far away
    return rq


@pytest.mark.parametrize("revive", [True, False])
def test_dead_code_revival_raises_utilisation(revive: bool) -> None:
    torch.manual_seed(7)
    rq = _collapsed(revive)
    utilisation = []
    for step in range(6):
        z = torch.randn(32, 4, 4, requires_grad=True)
        out = rq.quantize(z)
        level1 = rq.codebooks[0].detach()  # as used in this call (level 1 may be revived too)
        out.loss.backward()  # revival must not break autograd
        utilisation.append(out.utilisation[1].item())
        if revive and step == 3:  # revived after 3 unused calls, from this call's level-2 residuals
            flat = z.detach().reshape(-1, 4)
            residuals = flat - level1[out.indices.reshape(-1, 2)[:, 0]]
            revived = rq.codebooks[1].detach()
            matches = (revived[:, None] - residuals[None]).abs().amax(dim=-1).min(dim=1).values
            assert (matches == 0).sum() >= 15  # 15 dead codes re-seeded from residuals
    assert utilisation[0] == 1 / 16
    if revive:
        assert utilisation[-1] > 0.5
    else:
        assert utilisation == [1 / 16] * 6


def test_eval_mode_neither_initialises_nor_revives() -> None:
    rq = _collapsed(True)
    rq.eval()
    before = rq.codebooks.detach().clone()
    for _ in range(5):
        rq.quantize(torch.randn(8, 2, 4))
    assert torch.equal(rq.codebooks.detach(), before)
    assert int(rq.steps_since_used.max()) == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_codes": 1}, "num_codes"),
        ({"num_quantizers": 0}, "num_quantizers"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"beta": -1.0}, "beta"),
        ({"dead_code_patience": 0}, "dead_code_patience"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, name: str) -> None:
    args = {"num_codes": 8, "latent_dim": 4, "num_quantizers": 2} | kwargs
    with pytest.raises(ValueError, match=name):
        RQCodebook(**args)


def test_bad_inputs_are_rejected() -> None:
    rq = RQCodebook(8, 4, num_quantizers=2)
    with pytest.raises(ValueError, match="z must have shape"):
        rq.quantize(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="num_quantizers"):
        rq.decode_from_codes(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="num_codes"):
        rq.decode_from_codes(torch.full((2, 3, 2), 8))


def test_nearest_code_ties_go_to_the_lowest_index() -> None:
    codes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])  # the last is equidistant from all four
    assert nearest_code(x, codes).tolist() == [0, 1, 0]
    assert nearest_code(x, codes, max_elements=4).tolist() == [0, 1, 0]


def test_residual_search_chunked_equals_unchunked() -> None:
    gen = torch.Generator().manual_seed(10)
    x, books = torch.randn(500, 7, generator=gen), torch.randn(3, 37, 7, generator=gen)
    whole = residual_search(x, books, max_elements=10**9)
    for max_elements in (37, 37 * 3, 1000):  # distance blocks of 1, 3, 27 rows; update blocks of 5, 15, 142
        chunked = residual_search(x, books, max_elements=max_elements)
        assert torch.equal(chunked.indices, whole.indices)
        assert torch.equal(chunked.summed, whole.summed)
        assert torch.equal(chunked.counts, whole.counts)
        torch.testing.assert_close(chunked.sq_error, whole.sq_error, rtol=1e-5, atol=0)
    # Each level's codes are the brute-force nearest codes of that level's residual.
    residual = x.clone()
    for q in range(3):
        assert torch.equal(whole.indices[:, q], torch.cdist(residual, books[q]).argmin(dim=1))
        residual = residual - books[q][whole.indices[:, q]]
    torch.testing.assert_close(whole.sq_error[-1], residual.pow(2).sum(), rtol=1e-5, atol=0)
    assert torch.equal(whole.counts.sum(dim=1), torch.full((3,), 500))


def _reference_quantize(rq: RQCodebook, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The quantizer's definition in plain autograd: (z_q [N, D], indices [N, Q], level losses [Q])."""
    residual = z.reshape(-1, rq.latent_dim)
    chosen_all, idx_all, losses = [], [], []
    for q in range(rq.num_quantizers):
        codes = rq.codebooks[q]
        idx = torch.cdist(residual.detach(), codes.detach()).argmin(dim=1)
        chosen = codes[idx]
        losses.append(F.mse_loss(chosen, residual.detach()) + rq.beta * F.mse_loss(residual, chosen.detach()))
        residual = residual - chosen.detach()
        chosen_all.append(chosen.detach())
        idx_all.append(idx)
    flat = z.reshape(-1, rq.latent_dim)
    z_q = sum(chosen_all[1:], chosen_all[0]) + (flat - flat.detach())
    return z_q, torch.stack(idx_all, dim=1), torch.stack(losses)


@pytest.mark.parametrize("max_elements", [None, 16 * 5])  # one block; 5 rows per block
def test_fast_path_matches_plain_autograd_reference(max_elements: int | None) -> None:
    torch.manual_seed(11)
    rq = RQCodebook(16, 8, num_quantizers=3, beta=0.3, kmeans_init=False, revive_dead_codes=False, max_elements=max_elements)
    with torch.no_grad():
        rq.codebooks.normal_()
    z = torch.randn(40, 3, 8, requires_grad=True)
    upstream = torch.randn(40, 3, 8)  # a decoder's gradient, through the straight-through path
    out = rq.quantize(z)
    ((out.z_q * upstream).sum() + 1.7 * out.loss).backward()
    fast_z, fast_books = z.grad.clone(), rq.codebooks.grad.clone()
    z.grad, rq.codebooks.grad = None, None
    ref_zq, ref_idx, ref_losses = _reference_quantize(rq, z)
    ((ref_zq.reshape(40, 3, 8) * upstream).sum() + 1.7 * ref_losses.sum()).backward()
    assert torch.equal(out.indices.reshape(-1, 3), ref_idx)
    torch.testing.assert_close(out.z_q.reshape(-1, 8), ref_zq, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.level_losses, ref_losses.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_z, z.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast_books, rq.codebooks.grad, rtol=1e-5, atol=1e-7)


def test_quantize_is_independent_of_block_size() -> None:
    torch.manual_seed(12)
    z = torch.randn(64, 4, 6)
    outs = []
    for max_elements in (None, 8, 8 * 7):
        torch.manual_seed(13)  # same k-means init and revival draws
        rq = RQCodebook(8, 6, num_quantizers=3, dead_code_patience=1, max_elements=max_elements)
        for _ in range(3):  # init, then revival of the codes unused in the call before
            out = rq.quantize(z)
        outs.append((out, rq.codebooks.detach().clone()))
    for out, books in outs[1:]:
        assert torch.equal(out.indices, outs[0][0].indices)
        assert torch.equal(out.z_q, outs[0][0].z_q)
        assert torch.equal(books, outs[0][1])


_SYNCING = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@pytest.mark.parametrize("batch", [16, 2])  # 48 rows >= 32 codes (permutation), 6 rows < 32 codes (with replacement)
def test_training_call_reads_nothing_back_to_the_host(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """After the k-means init, a training call + backward (revival included) converts no tensor to Python."""
    torch.manual_seed(14)
    rq = RQCodebook(32, 4, num_quantizers=2, dead_code_patience=1)
    rq.quantize(torch.randn(batch, 3, 4))  # k-means init (reads the flag once)
    before = rq.codebooks.detach().clone()

    def refuse(*_args, **_kwargs):
        raise AssertionError("host sync in a training call")

    with monkeypatch.context() as patch:
        for name in _SYNCING:
            patch.setattr(torch.Tensor, name, refuse)
        z = torch.randn(batch, 3, 4, requires_grad=True)
        out = rq.quantize(z)
        (out.loss + out.z_q.sum()).backward()
    assert not torch.equal(rq.codebooks.detach(), before)  # codes unused in the init call were re-seeded
    assert torch.isfinite(rq.codebooks.grad).all() and torch.isfinite(z.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_call_does_not_synchronise() -> None:
    torch.manual_seed(15)
    rq = RQCodebook(64, 16, num_quantizers=3, dead_code_patience=1).cuda()
    rq.quantize(torch.randn(64, 4, 16, device="cuda"))  # k-means init (syncs, once)
    z = torch.randn(64, 4, 16, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = rq.quantize(z)
        (out.loss + out.z_q.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = RQCodebook(64, 16, num_quantizers=3, kmeans_init=False, revive_dead_codes=False)
    cpu.load_state_dict({k: v.cpu() for k, v in rq.state_dict().items()})
    cpu.eval()
    assert torch.equal(cpu.cal_codes(z.detach().cpu()), rq.eval().cal_codes(z.detach()).cpu())


def test_revival_leaves_live_codes_bit_identical() -> None:
    torch.manual_seed(16)
    rq = RQCodebook(8, 4, num_quantizers=2, dead_code_patience=1000)
    z = torch.randn(30, 2, 4)
    rq.quantize(z)  # init
    before = rq.codebooks.detach().clone()
    for _ in range(3):
        rq.quantize(z)  # candidates are drawn every call, but no code is dead
    assert torch.equal(rq.codebooks.detach(), before)


def test_two_calls_before_backward_with_revival_in_between() -> None:
    """Revival rewrites the codebook in place; a graph built before it must still backpropagate."""
    torch.manual_seed(17)
    rq = _collapsed(True)
    z1, z2 = torch.randn(32, 4, 4, requires_grad=True), torch.randn(32, 4, 4, requires_grad=True)
    for _ in range(3):
        rq.quantize(torch.randn(32, 4, 4))  # level-2 codes become dead
    first = rq.quantize(z1)
    second = rq.quantize(z2)  # revives level-2 codes before the first graph is used
    (first.loss + second.loss).backward()
    assert z1.grad is not None and z2.grad is not None and torch.isfinite(rq.codebooks.grad).all()


def test_autocast_does_not_change_codes() -> None:
    torch.manual_seed(18)
    rq = RQCodebook(64, 16, num_quantizers=3)
    z = torch.randn(50, 4, 16)
    rq.quantize(z)
    rq.eval()
    plain = rq.quantize(z)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = rq.quantize(z)
    assert torch.equal(mixed.indices, plain.indices) and mixed.z_q.dtype == torch.float32
    assert torch.equal(rq.cal_codes(z.bfloat16()), rq.cal_codes(z.bfloat16().float()))


def test_loading_an_uninitialised_state_reinitialises() -> None:
    torch.manual_seed(19)
    fresh_state = RQCodebook(8, 6, num_quantizers=1).state_dict()
    rq = RQCodebook(8, 6, num_quantizers=1)
    rq.quantize(torch.randn(40, 1, 6))  # initialised
    rq.load_state_dict(fresh_state)
    rq.quantize(_clustered(20, 3.0 * torch.randn(8, 6)))
    assert bool(rq.initialised)
    assert not torch.equal(rq.codebooks.detach(), fresh_state["codebooks"])


def _padded(z: torch.Tensor, extra: int, value: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """z [B, L, D] with ``extra`` padding sequences after it (random, or all ``value``), and the valid flags [B + extra]."""
    pad = torch.randn(extra, *z.shape[1:]) if value is None else torch.full((extra, *z.shape[1:]), value)
    return torch.cat([z, pad]), torch.arange(z.shape[0] + extra) < z.shape[0]


def test_padded_call_equals_unpadded_call() -> None:
    """Padding sequences marked invalid change no loss, statistic or gradient, bit for bit."""
    torch.manual_seed(19)
    rq = RQCodebook(16, 8, num_quantizers=3, revive_dead_codes=False)
    z = torch.randn(20, 4, 8)
    rq.quantize(z)  # k-means init
    padded, valid = _padded(z, 7)
    plain_z, padded_z = z.clone().requires_grad_(), padded.requires_grad_()
    plain, pad = rq.quantize(plain_z), rq.quantize(padded_z, valid)
    assert torch.equal(pad.indices[:20], plain.indices)
    for name in ("loss", "level_losses", "utilisation", "perplexity"):
        assert torch.equal(getattr(pad, name), getattr(plain, name)), name
    assert torch.equal(pad.z_q[:20], plain.z_q)
    (plain.loss + plain.z_q.pow(2).sum()).backward()
    plain_grad = rq.codebooks.grad.clone()
    rq.codebooks.grad = None
    (pad.loss + pad.z_q[:20].pow(2).sum()).backward()
    assert torch.equal(rq.codebooks.grad, plain_grad)
    assert torch.equal(padded_z.grad[:20], plain_z.grad) and not padded_z.grad[20:].any()


def test_padded_call_counts_only_valid_rows_and_revives_from_them() -> None:
    torch.manual_seed(20)
    rq = RQCodebook(8, 4, num_quantizers=2, dead_code_patience=1)
    z = torch.randn(30, 2, 4)
    rq.quantize(z)  # k-means init
    rq.steps_since_used.fill_(5)  # every code dead: all are re-seeded from this call's residuals
    padded, valid = _padded(z, 10, value=1000.0)
    out = rq.quantize(padded, valid)
    assert rq.codebooks.detach().abs().max() < 100  # no code came from a padding row
    used = torch.zeros(2, 8, dtype=torch.bool)
    used[0, out.indices[:30, :, 0].unique()] = True
    used[1, out.indices[:30, :, 1].unique()] = True
    assert torch.equal(out.utilisation, used.float().mean(dim=1))  # padding rows' codes are not counted
    assert torch.equal(rq.steps_since_used == 0, used)
    with pytest.raises(ValueError, match="valid must have shape"):
        rq.quantize(padded, valid[:-1])
