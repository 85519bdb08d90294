"""Benchmark RQCodebook against vector-quantize-pytorch's ResidualVQ: speed, memory, reconstruction.

Plain library use (no Kedro). For every latent count ``--n`` and implementation, one fresh
subprocess (so peak memory is that implementation's own) generates the same latents, trains
the quantizer's codebooks with Adam for ``--train-steps`` minibatch steps (the same batches
for all), measures reconstruction MSE on all n latents, then times ``--repeats`` training-mode
forward + backward calls on all n latents. One table, side by side:

    pip install -e ".[bench]"
    python benchmarks/bench_quantizer.py --device cpu            # n = 1,000,000 and 16,384
    python benchmarks/bench_quantizer.py --device cuda
    python benchmarks/bench_quantizer.py --device cpu --n 65536 --repeats 2 --train-steps 20   # quick check

Implementations (all Euclidean, codebooks learned by gradient, straight-through to z):

- ``RQCodebook``: this project's quantizer with its defaults (k-means init on the first batch,
  dead-code revival after 50 unused calls).
- ``ResidualVQ``: ``learnable_codebook=True, ema_update=False, rotation_trick=False`` (plain
  straight-through, as RQCodebook), ``commitment_weight=1`` (so the codebook's gradient has
  RQCodebook's weight), no k-means, no dead-code expiry: the cheapest equivalent setting.
- ``ResidualVQ+ac``: the same with its anti-collapse options on: ``kmeans_init=True,
  kmeans_iters=10, threshold_ema_dead_code=2``.

Latents: a fixed-seed Gaussian mixture (``--clusters`` centres ~ N(0, I), Zipf-distributed
cluster sizes, per-cluster spread 0.2-0.8). One million real latents do not exist here
(FB15k-237 has 14,541 entities x 16 positions), and a mixture with rare clusters has the
structure that makes k-means init and dead-code handling matter, unlike isotropic noise.

On CPU, a ResidualVQ call over all n latents needs ~44 KB per latent for its [n, K] one-hot
and distance tensors (44 GB at n = 1M); where that exceeds ``--ref-memory-gb`` the call is
split into row chunks whose gradients accumulate (same work, reported in the table).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
try:
    import rq_kg_pipeline  # noqa: F401 - installed (pip install -e .)
except ImportError:  # a bare checkout, e.g. on a GPU machine: use its src/
    sys.path.insert(0, str(ROOT / "src"))
IMPLEMENTATIONS = ("RQCodebook", "ResidualVQ", "ResidualVQ+ac")
RVQ_BYTES_PER_ROW_PER_CODE = 44  # measured peak of a ResidualVQ training call, Q = 4, per latent and code
EVAL_ROWS = 65536  # rows per no-grad evaluation call (bounds ResidualVQ's [rows, K] tensors)


# --------------------------------------------------------------------------------- latents
def mixture_latents(n: int, dim: int, clusters: int, seed: int) -> Tensor:
    """[n, dim] float32 latents of a fixed-seed Gaussian mixture with Zipf cluster weights (CPU)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=gen)  # [C, D]
    spread = 0.2 + 0.6 * torch.rand(clusters, 1, generator=gen)  # [C, 1]
    weights = 1.0 / torch.arange(1, clusters + 1, dtype=torch.float64)  # Zipf, s = 1
    out = torch.empty(n, dim)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        assign = torch.multinomial(weights, stop - start, replacement=True, generator=gen)  # [m]
        noise = torch.randn(stop - start, dim, generator=gen)
        out[start:stop] = centres[assign] + spread[assign] * noise
    return out


# ---------------------------------------------------------------------------------- models
class Quantizer:
    """One implementation behind a common face: a training-mode loss and a no-grad reconstruction."""

    def __init__(self, name: str, dim: int, levels: int, codes: int, device: torch.device) -> None:
        self.name = name
        if name == "RQCodebook":
            from rq_kg_pipeline.models.rq_codebook import RQCodebook

            self.module: nn.Module = RQCodebook(codes, dim, levels)
        else:
            from vector_quantize_pytorch import ResidualVQ  # benchmark-only dependency (checked in parse_args)

            anti_collapse = name.endswith("+ac")
            self.module = ResidualVQ(
                dim=dim,
                num_quantizers=levels,
                codebook_size=codes,
                learnable_codebook=True,
                ema_update=False,
                rotation_trick=False,
                commitment_weight=1.0,
                kmeans_init=anti_collapse,
                kmeans_iters=10,
                threshold_ema_dead_code=2 if anti_collapse else 0,
            )
        self.module.to(device)

    def loss(self, z: Tensor) -> Tensor:
        """Training-mode quantizer loss + mean(z_q) (so the straight-through path to z is included)."""
        if self.name == "RQCodebook":
            out = self.module.quantize(z.unsqueeze(1))  # [m, 1, D]
            return out.loss + out.z_q.mean()
        z_q, _, losses = self.module(z.unsqueeze(0))  # [1, m, D], [1, m, Q], [Q]
        return losses.sum() + z_q.mean()

    @torch.no_grad()
    def reconstruct(self, z: Tensor) -> Tensor:
        """[m, D] sum of chosen codes, in eval mode."""
        if self.name == "RQCodebook":
            return self.module.cal_code_emds(z.unsqueeze(1)).squeeze(1)
        z_q, _, _ = self.module(z.unsqueeze(0))
        return z_q.squeeze(0)


# --------------------------------------------------------------------------------- measure
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak RSS of this process (CPU), GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def current_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**30
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def reconstruction_mse(quantizer: Quantizer, latents: Tensor) -> float:
    """Mean over all latents and dims of (z - sum of chosen codes)^2, in eval mode."""
    quantizer.module.eval()
    total = torch.zeros((), dtype=torch.float64, device=latents.device)
    for start in range(0, latents.shape[0], EVAL_ROWS):
        z = latents[start : start + EVAL_ROWS]
        total += (z - quantizer.reconstruct(z)).double().pow(2).sum()
    quantizer.module.train()
    return float(total) / latents.numel()


def train(quantizer: Quantizer, latents: Tensor, steps: int, batch: int, lr: float, seed: int) -> None:
    """``steps`` Adam steps on minibatches drawn with a fixed seed (the same batches for every implementation)."""
    gen = torch.Generator().manual_seed(seed + 1)
    optimiser = torch.optim.Adam(quantizer.module.parameters(), lr=lr)
    quantizer.module.train()
    n = latents.shape[0]
    for _ in range(steps):
        rows = torch.randperm(n, generator=gen)[: min(batch, n)].to(latents.device)
        optimiser.zero_grad(set_to_none=True)
        quantizer.loss(latents.index_select(0, rows)).backward()
        optimiser.step()


def step_fn(quantizer: Quantizer, z: Tensor, chunk: int) -> Callable[[], None]:
    """One training-mode forward + backward over all of z [n, D], in row chunks of ``chunk``."""
    n = z.shape[0]

    def step() -> None:
        quantizer.module.zero_grad(set_to_none=True)
        z.grad = None
        for start in range(0, n, chunk):
            part = z[start : start + chunk]
            (quantizer.loss(part) * (part.shape[0] / n)).backward()

    return step


def ref_chunk(name: str, n: int, codes: int, memory_gb: float | None) -> int:
    """Rows per call: all for RQCodebook, and for ResidualVQ as many as fit in ``memory_gb`` (None: all)."""
    if name == "RQCodebook" or memory_gb is None:
        return n
    rows = int(memory_gb * 1e9 // (RVQ_BYTES_PER_ROW_PER_CODE * codes))
    return max(1024, min(n, rows))


def run_case(args: argparse.Namespace, name: str, n: int) -> dict[str, Any]:
    """Train, evaluate and time one implementation at one latent count (inside a fresh process)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    latents = mixture_latents(n, args.dim, args.clusters, args.seed).to(device)  # [n, D]
    base = current_memory_gib(device)
    torch.manual_seed(args.seed)
    quantizer = Quantizer(name, args.dim, args.levels, args.codes, device)
    t0 = time.perf_counter()
    train(quantizer, latents, args.train_steps, args.train_batch, args.lr, args.seed)
    sync(device)
    train_s = time.perf_counter() - t0
    mse = reconstruction_mse(quantizer, latents)
    latent_power = float(latents.pow(2).mean())
    chunk = ref_chunk(name, n, args.codes, args.ref_memory_gb)
    z = latents.requires_grad_(True)  # the latents themselves: no second copy
    step = step_fn(quantizer, z, chunk)
    for _ in range(args.warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wall, cpu = [], []
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        sync(device)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {
        "impl": name, "n": n, "wall": wall, "cpu": cpu, "peak_gib": peak_memory_gib(device), "base_gib": base,
        "chunk": chunk, "train_s": train_s, "mse": mse, "latent_ms": latent_power,
    }


# ----------------------------------------------------------------------------------- report
def describe(device: torch.device) -> str:
    try:
        from importlib.metadata import version

        vq = version("vector-quantize-pytorch")
    except Exception:  # noqa: BLE001 - only for the header line
        vq = "not installed"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} cores, {torch.get_num_threads()} threads"
    load = ", load average %.1f %.1f %.1f" % os.getloadavg() if device.type == "cpu" else ""
    return f"device {device.type} ({where}{load}); torch {torch.__version__}; vector-quantize-pytorch {vq}"


def format_row(r: dict[str, Any], rq_median: float | None) -> str:
    """One markdown table row of a case's result (``rq_median``: RQCodebook's median at that n)."""
    if "error" in r:
        return f"| {r['impl']} | {r['n']:,} | failed: {r['error']} |"
    med = statistics.median(r["wall"])
    ratio = f"{med / rq_median:.2f}x" if rq_median else "-"
    return (f"| {r['impl']} | {r['n']:,} | {med:.3f} | {min(r['wall']):.3f} | {max(r['wall']):.3f} | "
            f"{statistics.median(r['cpu']):.2f} | {r['peak_gib']:.2f} ({r['base_gib']:.2f}) | {ratio} | "
            f"{r['mse']:.5f} | {r['mse'] / r['latent_ms']:.4f} | {r['train_s']:.1f} | {r['chunk']:,} |")


def print_report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    mem = "peak GPU alloc GiB" if args.device == "cuda" else "peak RSS GiB"
    print(f"\nQ={args.levels} K={args.codes} D={args.dim}; fwd+bwd over all n latents, {args.repeats} repeats; "
          f"MSE after {args.train_steps} Adam steps (lr {args.lr}, batch {args.train_batch}) on the same latents")
    print(f"| impl | n | median s | min s | max s | cpu s (median) | {mem} (base) | RVQ/RQ time | recon MSE | MSE / latent power | train s | rows per call |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rq = {r["n"]: statistics.median(r["wall"]) for r in results if r["impl"] == "RQCodebook" and "wall" in r}
    for r in results:
        print(format_row(r, rq.get(r["n"])))
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--n", type=int, nargs="+", default=[1_000_000, 16_384], help="latent counts, one row group each")
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codes", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls before timing (default: 1 on CUDA, 0 on CPU)")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--train-batch", type=int, default=16_384)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--impl", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    parser.add_argument("--ref-memory-gb", type=float, default=None, help="memory for one ResidualVQ call (default: 4 on CPU, no limit on CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    for name in ("dim", "levels", "codes", "repeats", "train_batch", "clusters"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.train_steps < 0 or min(args.n) < 1:
        raise SystemExit("--train-steps must be >= 0 and every --n >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    if args.warmup is None:
        args.warmup = 1 if args.device == "cuda" else 0
    if args.ref_memory_gb is None and args.device == "cpu":
        args.ref_memory_gb = 4.0
    if any(name != "RQCodebook" for name in args.impl):
        try:
            import vector_quantize_pytorch  # noqa: F401 - benchmark-only dependency
        except ImportError:
            raise SystemExit('vector-quantize-pytorch is missing: pip install -e ".[bench]"') from None
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe(torch.device(args.device)), flush=True)
    print("command: python benchmarks/bench_quantizer.py " + " ".join(sys.argv[1:] if argv is None else argv), flush=True)
    results = []
    spawn = multiprocessing.get_context("spawn")  # a fresh process per case: its own peak memory, no CUDA fork
    for n in args.n:
        for name in args.impl:
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                try:
                    result = pool.submit(run_case, args, name, n).result()
                except Exception as err:  # noqa: BLE001 - an out-of-memory child is reported, not fatal
                    result = {"impl": name, "n": n, "error": f"{type(err).__name__}: {err}"[:200]}
            results.append(result)
            rq = [statistics.median(r["wall"]) for r in results if r["impl"] == "RQCodebook" and r["n"] == n and "wall" in r]
            print("done: " + format_row(result, rq[0] if rq else None), flush=True)  # survives a later failure
    print_report(results, args)


if __name__ == "__main__":
    main()
