"""The bf16 products of ConvE and scoring with unaligned rows against their aligned forms, and the dropout mask draws.

cuBLAS picks slow align-1 kernels when bf16 rows are not a multiple of 16 bytes. FB15k-237's
recipe had two such products: the [B, 14541] logits (scored against 14,544 padded candidates
now) and ConvE's [B*H*W, 49] patch columns (56 taps now, the bias added apart). Also times the
feature-map mask: random int32 words + a comparison (the CPU scheme) against one ``bernoulli_``.
Each figure is a median over CUDA calls (``torch.utils.benchmark``), in microseconds. CUDA only.

    python benchmarks/bench_aligned_gemms.py
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.utils.benchmark import Timer


def micros(fn: Callable[[], object]) -> float:
    fn()
    torch.cuda.synchronize()
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.3).median * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--entities", type=int, default=14541)
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--filters", type=int, default=200)
    parser.add_argument("--positions", type=int, default=196, help="H*W of ConvE's output (14 x 14)")
    args = parser.parse_args()
    dev, bf = torch.device("cuda"), torch.bfloat16
    rows = []
    b, d = args.batch, args.dim
    for m in (args.entities, -(-args.entities // 8) * 8):
        q, c, g = (torch.randn(*s, device=dev, dtype=bf) for s in ((b, d), (m, d), (b, m)))
        rows.append((f"scoring, {m} candidates", micros(lambda: q @ c.t()), micros(lambda: g @ c), micros(lambda: g.t() @ q)))
    n, f = b * args.positions, args.filters
    for taps in (49, 56):
        cols, w, g = (torch.randn(*s, device=dev, dtype=bf) for s in ((n, taps), (f, taps), (n, f)))
        bias = torch.randn(f, device=dev, dtype=bf)
        rows.append((f"convolution, {taps} taps, addmm with bias", micros(lambda: torch.addmm(bias, cols, w.t())),
                     micros(lambda: g.t() @ cols), micros(lambda: g @ w)))
        rows.append((f"convolution, {taps} taps, plain product", micros(lambda: cols @ w.t()), float("nan"), float("nan")))
    print(f"\nbf16 products on {torch.cuda.get_device_name(dev)}, median us")
    print("| product | forward | gradient (weight / candidates) | gradient (input / query) |\n| --- | --- | --- | --- |")
    for name, *times in rows:
        print(f"| {name} | " + " | ".join("-" if t != t else f"{t:.1f}" for t in times) + " |")
    count = n * f
    words = torch.empty((count + 1) // 2, dtype=torch.int32, device=dev)
    drawn = micros(lambda: words.random_(-(2**31), 2**31))
    compared = micros(lambda: words.view(torch.int16) < -13107)
    bernoulli = micros(lambda: torch.empty(count, dtype=torch.bool, device=dev).bernoulli_(0.3))
    print(f"\nfeature-map mask of {count:,} elements: random int32 words {drawn:.1f} + comparison {compared:.1f} us; "
          f"bernoulli_ {bernoulli:.1f} us")


if __name__ == "__main__":
    main()
