"""GPU timing of the quantizer's part of the FB15k-237 training step ([16384, 200] latents, Q = 4, K = 1024, D = 200):
residual_search torch route (addmm + min, row-block updates) vs Triton route (search + fused update per level),
the search kernel per level with TF32 ranking + float32 re-check vs TF32x3 (the previous default) vs plain
TF32, the fused update and code sums vs their torch ops, quantize forward + backward on both routes, and index agreement
with the float32 addmm route (allow_tf32 off). CUDA events around CUDA-graph replays (eager if capture
fails), median of --reps.

    python benchmarks/bench_quantizer_kernels.py
    TRITON_INTERPRET=1 python benchmarks/bench_quantizer_kernels.py --device cpu --rows 256 --codes 64 --dim 24 --reps 2  (smoke run, no GPU)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import triton

from rq_kg_pipeline.models import triton_nearest_code_kernels as kernels
from rq_kg_pipeline.models.nearest_code import fused_code_sums, fused_residual_update, update_programs
from rq_kg_pipeline.models.rq_codebook import RQCodebook, residual_search

LEVELS = 4
# (label, input_precision, rerank, BLOCK_M, BLOCK_K, BLOCK_D, num_warps, num_stages)
SEARCHES = [
    ("tf32 + f32 re-check", "tf32", True, 64, 128, 32, 4, 3),
    ("tf32 + f32 re-check", "tf32", True, 128, 128, 32, 8, 3),
    ("tf32 + f32 re-check", "tf32", True, 64, 256, 32, 8, 3),
    ("tf32x3 (previous)", "tf32x3", False, 64, 128, 32, 4, 3),
    ("tf32 ranking only", "tf32", False, 64, 128, 32, 4, 3),
]


def median_ms(fn, reps: int, graph: bool) -> tuple[float, str]:
    """(median device ms of fn() over reps, "graph" or "eager"): CUDA events around replays of a CUDA graph
    of fn (eager calls if capture fails or graph is False); wall clock on CPU."""
    for _ in range(3):
        fn()
    if not torch.cuda.is_available():
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), "wall"
    run, how = fn, "eager"
    if graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            run, how = g.replay, "graph"
        except Exception as err:  # not capturable: report eager timing instead
            print(f"  (capture failed, timing eagerly: {repr(err)[:100]})")
            torch.cuda.synchronize()
    for _ in range(3):
        run()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, stop in events:
        start.record()
        run()
        stop.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in events), how


def kmeans_like_books(x: torch.Tensor, codes: int, gen: torch.Generator) -> torch.Tensor:
    """[Q, K, D] codebooks like a trained quantizer's: level q's codes are residual rows of level q (plus
    a little noise), so many rows have close second-best codes, as in training."""
    residual, books = x.clone(), []
    for _ in range(LEVELS):
        pick = torch.randperm(x.shape[0], device=x.device, generator=gen)[:codes]
        book = residual[pick] + 0.05 * residual.std() * torch.randn(codes, x.shape[1], device=x.device, generator=gen)
        books.append(book)
        residual = residual - book[residual_search(residual, book.unsqueeze(0), fused=False).indices[:, 0]]
    return torch.stack(books)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--codes", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference route is float32 addmm
    name = torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)"
    print(f"{name}  torch {torch.__version__}  triton {triton.__version__}  kernels {kernels.__file__}")
    print(f"[{args.rows}, {args.dim}] x Q={LEVELS} x [{args.codes}, {args.dim}]; module defaults: {kernels.INPUT_PRECISION} "
          f"rerank={kernels.RERANK} BLOCK_M {kernels.BLOCK_M} BLOCK_K {kernels.BLOCK_K} BLOCK_D {kernels.BLOCK_D}")
    timed = lambda fn, graph=True: median_ms(fn, args.reps, graph)  # noqa: E731
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(args.rows, args.dim, device=dev, generator=gen)  # [N, D]
    books = kmeans_like_books(x, args.codes, gen)  # [Q, K, D]
    valid = torch.ones(args.rows, dtype=torch.bool, device=dev)
    valid[-args.rows // 16:] = False  # a padded batch, as the training step's

    print("\n== residual_search, Q levels (time per call)")
    ref = residual_search(x, books, valid=valid, fused=False)
    new = residual_search(x, books, valid=valid, fused=True)
    t_old, how_old = timed(lambda: residual_search(x, books, valid=valid, fused=False))
    t_new, how_new = timed(lambda: residual_search(x, books, valid=valid, fused=True))
    print(f"torch route (addmm + min, block updates): {t_old * 1e3:8.1f} us ({how_old})")
    print(f"Triton route (search + fused update):     {t_new * 1e3:8.1f} us ({how_new})  speedup {t_old / t_new:.2f}x")
    agree = (new.indices == ref.indices).double().mean(0).tolist()
    print(f"index agreement with addmm per level: {[f'{a:.6f}' for a in agree]}  (greedy: a level-1 difference changes later levels)")
    print(f"sq_error relative difference: {((new.sq_error - ref.sq_error).abs() / ref.sq_error).max().item():.2e}; "
          f"counts equal: {torch.equal(new.counts, ref.counts)}")

    print("\n== search kernel per level ([N, D] x [K, D]); agreement with addmm, float64 excess over the optimum")
    header = f"{'search':<22} {'BM':>4} {'BK':>4} {'BD':>3} {'warps':>5} {'stages':>6} {'us':>8}"
    print(f"{header}  {'agree (kmeans-like)':>19} {'agree (randn)':>13} {'max excess':>10}")
    random_codes = torch.randn(args.codes, args.dim, device=dev, generator=gen)
    cases = []  # (x, codes, codes_sq, addmm indices, float64 distances): level 1 of the kmeans-like books, randn codes
    for codes in (books[0], random_codes):
        codes_sq = codes.pow(2).sum(1)
        idx = torch.addmm(codes_sq.unsqueeze(0), x, codes.t(), beta=1.0, alpha=-2.0).argmin(1)
        x64, c64 = x.double(), codes.double()
        cases.append((codes, codes_sq, idx, c64.pow(2).sum(1) - 2 * x64 @ c64.t()))
    dist = torch.empty(args.rows, args.codes, device=dev)
    best = torch.empty(args.rows, device=dev)
    out_ref = torch.empty(args.rows, dtype=torch.long, device=dev)
    codes, codes_sq = cases[0][0], cases[0][1]
    t_mm, how = timed(lambda: torch.min(torch.addmm(codes_sq.unsqueeze(0), x, codes.t(), beta=1.0, alpha=-2.0, out=dist),
                                        dim=1, out=(best, out_ref)))
    print(f"{'addmm + min (f32)':<22} {'':>4} {'':>4} {'':>3} {'':>5} {'':>6} {t_mm * 1e3:8.1f}  ({how})")
    out = torch.empty(args.rows, dtype=torch.long, device=dev)
    rows = torch.arange(args.rows, device=dev)
    for label, precision, rerank, bm, bk, bd, warps, stages in SEARCHES:
        def search(codes: torch.Tensor, codes_sq: torch.Tensor) -> torch.Tensor:
            return kernels.nearest_code_into(x, codes, codes_sq, out, block_m=bm, block_k=bk, block_d=bd, num_warps=warps,
                                             num_stages=stages, input_precision=precision, rerank=rerank)
        try:
            t, how = timed(lambda: search(codes, codes_sq))
        except Exception as err:  # a config the card cannot run (shared memory, registers)
            print(f"{label:<22} {bm:4d} {bk:4d} {bd:3d} {warps:5d} {stages:6d}  failed: {repr(err)[:100]}")
            continue
        agreement, excess = [], 0.0
        for case_codes, case_sq, case_idx, d64 in cases:
            got = search(case_codes, case_sq)
            agreement.append((got == case_idx).double().mean().item())
            opt = d64.min(1).values
            excess = max(excess, ((d64[rows, got] - opt) / (opt + x.double().pow(2).sum(1))).max().item())  # of ||x - e||^2
        print(f"{label:<22} {bm:4d} {bk:4d} {bd:3d} {warps:5d} {stages:6d} {t * 1e3:8.1f}  {agreement[0]:19.6f} "
              f"{agreement[1]:13.6f} {excess:10.2e}")

    print("\n== per-level update (residual -= e, squared error, code sum, counts)")
    all_idx = new.indices.t().contiguous()  # [Q, N]
    residual = x.clone()
    idx = cases[0][2]
    summed = torch.empty_like(x)
    chosen = torch.empty_like(x)
    keep = valid.float().unsqueeze(1)
    sq = torch.zeros((), device=dev)
    counts = torch.zeros(args.codes, dtype=torch.int32, device=dev)
    parts = torch.empty(update_programs(args.rows), device=dev)

    def torch_update() -> None:
        torch.index_select(codes, 0, idx, out=chosen)
        residual.sub_(chosen)
        sq.add_(torch.dot((residual * keep).reshape(-1), residual.reshape(-1)))
        summed.add_(chosen)

    t_torch, how = timed(torch_update)
    t_fused, how_f = timed(lambda: fused_residual_update(residual, codes, idx, parts, out=residual, valid=valid, counts=counts))
    t_sums, how_s = timed(lambda: fused_code_sums(books, all_idx, out=summed))
    print(f"torch ops per level (index_select, sub_, mul, dot, add_; counts after the loop): {t_torch * 1e3:7.1f} us ({how})")
    print(f"fused_residual_update per level (counts included):                              {t_fused * 1e3:7.1f} us ({how_f})")
    print(f"fused_code_sums, all {LEVELS} levels at the end:                                      {t_sums * 1e3:7.1f} us ({how_s})")

    print("\n== RQCodebook.quantize forward + backward (training mode, revival on), [N/16, 16, D]")
    z0 = x.view(-1, 16, args.dim)
    for fused in (False, True):
        torch.manual_seed(1)
        rq = RQCodebook(args.codes, args.dim, num_quantizers=LEVELS, fused_search=fused).to(dev)
        rq.quantize(z0)  # k-means init (host reads: outside the timing)
        z = z0.clone().requires_grad_()

        def step() -> None:
            q = rq.quantize(z)
            (q.loss + q.z_q.sum()).backward()

        try:
            t, how = timed(step)
        except Exception as err:
            print(f"fused={fused}: failed {repr(err)[:100]}")
            continue
        print(f"fused={fused!s:5}: {t * 1e3:8.1f} us ({how})")


if __name__ == "__main__":
    main()
