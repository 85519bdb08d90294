"""RQCodebook: loss formula, straight-through gradient, exact decoding, k-means init, dead-code revival."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.models.rq_codebook import RQCodebook, nearest_code


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
