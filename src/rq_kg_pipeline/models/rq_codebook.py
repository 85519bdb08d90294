"""Residual vector quantizer (RQ-VAE bottleneck): Q independent codebooks of K codes each.

Level i quantizes the residual r_i left by levels < i (r_1 = z) to its nearest code e_i and
passes on r_{i+1} = r_i - sg[e_i]. Losses per level follow VQ-VAE / RQ-VAE:
codebook ||sg[r_i] - e_i||^2 + beta * commitment ||r_i - sg[e_i]||^2, each a mean over
vectors *and* dimensions (``F.mse_loss``), summed over levels.

Why the residual passes on ``sg[e_i]``: each codebook is then trained only by its own
codebook term (as in RQ-VAE, Lee et al. 2022, whose quantizer runs on detached residuals),
and level i's commitment term becomes ||z - sg[e_1 + ... + e_i]||^2, which pulls the
encoder towards every partial reconstruction, coarse to fine. Without the stop-gradient,
level i's commitment term would also move the codes of earlier levels.

The output is straight-through: ``z_q = sg[sum_i e_i] + (z - sg[z])``, whose value is
*exactly* the sum of the chosen codes (as :meth:`RQCodebook.decode_from_codes` computes
it) and whose gradient w.r.t. z is the identity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Largest [rows, K] distance block materialised at once (float32: 64 MiB).
MAX_DISTANCE_ELEMENTS = 1 << 24


class RQOutput(NamedTuple):
    """Everything one quantization call produces (losses, codes, usage statistics)."""

    z_q: Tensor  # [B, L, D] straight-through: value = sum of chosen codes, gradient flows to z
    indices: Tensor  # [B, L, Q] int64
    loss: Tensor  # scalar, sum over levels of (codebook + beta * commitment)
    level_losses: Tensor  # [Q] detached, per-level loss
    utilisation: Tensor  # [Q] share of the K codes used in this call
    perplexity: Tensor  # [Q] exp(entropy of code usage in this call)


def nearest_code(x: Tensor, codes: Tensor, max_elements: int = MAX_DISTANCE_ELEMENTS) -> Tensor:
    """[N] int64 index of the nearest row of ``codes`` [K, D] for each row of ``x`` [N, D].

    Squared Euclidean distance ||x||^2 - 2 x.e + ||e||^2 by matmul, in row chunks of at most
    ``max_elements`` distances; ||x||^2 is constant per row, so it is left out of the argmin.
    Ties go to the lowest index (``argmin``), so the result is deterministic. Autocast is
    switched off here: a code is an argmin, and half-precision distances would flip codes.
    """
    num_codes = codes.shape[0]
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        codes = codes.float()
        codes_sq = codes.pow(2).sum(dim=1)  # [K]
        rows = max(1, max_elements // num_codes)
        for start in range(0, x.shape[0], rows):
            block = x[start : start + rows].float()  # [n, D]
            dist = torch.addmm(codes_sq.unsqueeze(0), block, codes.t(), beta=1.0, alpha=-2.0)  # [n, K]
            out[start : start + rows] = dist.argmin(dim=1)
    return out


def sample_vectors(x: Tensor, count: int) -> Tensor:
    """``count`` rows drawn from ``x`` [N, D] with torch's RNG: distinct rows when N >= count.

    When N < count, rows are drawn with replacement and Gaussian noise of 1% of the data's
    RMS is added so that repeated rows give distinct (not tied) codes.
    """
    n = x.shape[0]
    if n >= count:
        return x[torch.randperm(n, device=x.device)[:count]].clone()
    picked = x[torch.randint(0, n, (count,), device=x.device)]  # [count, D]
    scale = 0.01 * x.pow(2).mean().sqrt() + 1e-6
    return picked + scale * torch.randn_like(picked)


def kmeans(x: Tensor, num_clusters: int, iters: int) -> Tensor:
    """[K, D] centroids of ``x`` [N, D] by Lloyd's algorithm from :func:`sample_vectors` seeds.

    A cluster that loses all its points keeps its previous centroid.
    """
    centroids = sample_vectors(x, num_clusters)  # [K, D]
    for _ in range(iters):
        assign = nearest_code(x, centroids)  # [N]
        counts = torch.bincount(assign, minlength=num_clusters)  # [K]
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # [K, D]
        means = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
        centroids = torch.where((counts > 0).unsqueeze(1), means, centroids)
    return centroids


class RQCodebook(nn.Module):
    """Residual quantizer with k-means initialisation and dead-code revival (Q = 1: plain VQ).

    ``initialised`` (buffer) says the codebook holds values the data-dependent init must not
    overwrite; it is saved in ``state_dict``, so a loaded checkpoint is never re-initialised.
    ``steps_since_used`` [Q, K] (buffer) counts training calls since each code was chosen; a
    code unused for ``dead_code_patience`` calls is re-seeded, before that level's search, from
    randomly chosen residuals of that level (so it is used at once). Its optimiser moments are
    left as they are. Both happen in training mode only; eval mode changes no state.
    """

    def __init__(
        self,
        num_codes: int,
        latent_dim: int,
        num_quantizers: int = 4,
        beta: float = 0.25,
        *,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        revive_dead_codes: bool = True,
        dead_code_patience: int = 50,
    ) -> None:
        super().__init__()
        if num_codes < 2:
            raise ValueError(f"num_codes must be >= 2, got {num_codes}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be >= 0, got {kmeans_iters}")
        if dead_code_patience < 1:
            raise ValueError(f"dead_code_patience must be >= 1, got {dead_code_patience}")
        self.num_codes = num_codes
        self.latent_dim = latent_dim
        self.num_quantizers = num_quantizers
        self.beta = beta
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.revive_dead_codes = revive_dead_codes
        self.dead_code_patience = dead_code_patience
        # The reference's uniform +-1/K start; replaced by k-means on the first training call.
        self.codebooks = nn.Parameter(
            torch.empty(num_quantizers, num_codes, latent_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        )  # [Q, K, D]
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        self.register_buffer("steps_since_used", torch.zeros(num_quantizers, num_codes, dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, latent_dim={self.latent_dim}, num_quantizers={self.num_quantizers}, "
            f"beta={self.beta}, kmeans_init={self.kmeans_init}, revive_dead_codes={self.revive_dead_codes}, "
            f"dead_code_patience={self.dead_code_patience}"
        )

    # ----------------------------------------------------------------------------- helpers
    def _flatten(self, z: Tensor) -> Tensor:
        """[..., D] -> [N, D] in the codebook's dtype, after checking the shape."""
        if z.ndim < 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape [B, L, {self.latent_dim}], got {tuple(z.shape)}")
        if z.numel() == 0:
            raise ValueError(f"z must hold at least one vector, got shape {tuple(z.shape)}")
        return z.reshape(-1, self.latent_dim).to(self.codebooks.dtype)

    @torch.no_grad()
    def _kmeans_initialise(self, flat: Tensor) -> None:
        """Level by level: k-means on that level's residuals, then subtract the chosen centroids."""
        residual = flat  # [N, D]
        for q in range(self.num_quantizers):
            centroids = kmeans(residual, self.num_codes, self.kmeans_iters)  # [K, D]
            self.codebooks[q].copy_(centroids)
            residual = residual - centroids[nearest_code(residual, centroids)]
        self.initialised.fill_(True)
        self.steps_since_used.zero_()

    @torch.no_grad()
    def _revive(self, level: int, residual: Tensor) -> None:
        """Re-seed codes of ``level`` unused for ``dead_code_patience`` calls from current residuals."""
        dead = self.steps_since_used[level] >= self.dead_code_patience  # [K] bool
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        self.codebooks[level, dead] = sample_vectors(residual, num_dead)
        self.steps_since_used[level, dead] = 0

    @torch.no_grad()
    def _mark_used(self, level: int, idx: Tensor) -> None:
        self.steps_since_used[level] += 1
        self.steps_since_used[level, idx] = 0

    # ------------------------------------------------------------------------------ public
    def quantize(self, z: Tensor) -> RQOutput:
        """Quantize z [B, L, D]; in training mode also k-means-initialises once and revives dead codes."""
        lead = z.shape[:-1]
        flat = self._flatten(z)  # [N, D]
        if self.training and not bool(self.initialised):
            self._kmeans_initialise(flat.detach())
        residual = flat  # [N, D], keeps the gradient to z for the commitment terms
        level_idx: list[Tensor] = []
        level_losses: list[Tensor] = []
        utilisation: list[Tensor] = []
        perplexity: list[Tensor] = []
        for q in range(self.num_quantizers):
            if self.training and self.revive_dead_codes:
                self._revive(q, residual.detach())
            codes = self.codebooks[q]  # [K, D]
            idx = nearest_code(residual.detach(), codes.detach())  # [N]
            chosen = codes.index_select(0, idx)  # [N, D]
            codebook_loss = F.mse_loss(chosen, residual.detach())
            commitment_loss = F.mse_loss(residual, chosen.detach())
            level_losses.append(codebook_loss + self.beta * commitment_loss)
            if self.training:
                self._mark_used(q, idx)
            counts = torch.bincount(idx, minlength=self.num_codes).to(flat.dtype)  # [K]
            probs = counts / counts.sum()
            entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
            utilisation.append((counts > 0).to(flat.dtype).mean())
            perplexity.append(entropy.exp())
            level_idx.append(idx)
            residual = residual - chosen.detach()
        indices = torch.stack(level_idx, dim=-1)  # [N, Q]
        summed = self._sum_levels(self._gather(indices)).detach()  # [N, D], as decode_from_codes
        z_q = summed + (flat - flat.detach())  # value == summed exactly, d z_q / d z = I
        losses = torch.stack(level_losses)  # [Q]
        return RQOutput(
            z_q.reshape(*lead, self.latent_dim),
            indices.reshape(*lead, self.num_quantizers),
            losses.sum(),
            losses.detach(),
            torch.stack(utilisation).detach(),
            torch.stack(perplexity).detach(),
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The seed's API: ``(z_q [B, L, D], indices [B, L, Q], loss)``."""
        out = self.quantize(z)
        return out.z_q, out.indices, out.loss

    @torch.no_grad()
    def cal_codes(self, z: Tensor) -> Tensor:
        """[B, L, Q] int64 codes of z [B, L, D]; no init, no revival, no gradient."""
        lead = z.shape[:-1]
        residual = self._flatten(z)  # [N, D]
        level_idx = []
        for q in range(self.num_quantizers):
            codes = self.codebooks[q]  # [K, D]
            idx = nearest_code(residual, codes)  # [N]
            level_idx.append(idx)
            residual = residual - codes.index_select(0, idx)
        return torch.stack(level_idx, dim=-1).reshape(*lead, self.num_quantizers)

    @torch.no_grad()
    def cal_code_emds(self, z: Tensor) -> Tensor:
        """[B, L, D] sum of the chosen codes of z (no straight-through term)."""
        return self.decode_from_codes(self.cal_codes(z))

    def _check_indices(self, indices: Tensor) -> None:
        if indices.shape[-1:] != (self.num_quantizers,):
            raise ValueError(f"indices must end with num_quantizers={self.num_quantizers}, got {tuple(indices.shape)}")
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"indices must lie in [0, num_codes={self.num_codes})")

    def _gather(self, indices: Tensor) -> Tensor:
        """[..., Q] valid codes -> [..., Q, D] code vectors (no checks)."""
        levels = torch.arange(self.num_quantizers, device=indices.device)  # [Q], broadcast over [..., Q]
        return self.codebooks[levels, indices.long()]

    @staticmethod
    def _sum_levels(vectors: Tensor) -> Tensor:
        """[..., Q, D] -> [..., D], level 1 first: the one summation order used everywhere."""
        total = vectors[..., 0, :]
        for q in range(1, vectors.shape[-2]):
            total = total + vectors[..., q, :]
        return total

    def level_code_vectors(self, indices: Tensor) -> Tensor:
        """[B, L, Q] codes -> [B, L, Q, D]: the chosen code vector of each level."""
        self._check_indices(indices)
        return self._gather(indices)

    def decode_from_codes(self, indices: Tensor) -> Tensor:
        """[B, L, Q] codes -> [B, L, D] sum of the chosen codes (equals cal_code_emds bit for bit)."""
        return self._sum_levels(self.level_code_vectors(indices))
