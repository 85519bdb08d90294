"""The fused Triton kernels of the quantizer (Triton's CPU interpreter here; compiled on CUDA where present)
against the torch route: the search (float64 argmin on separated data; near ties resolved by the exact
float32 re-check of TF32's best two; ties to the lowest index; partial tiles), the per-level update,
the backward recomputation, and residual_search / RQCodebook built on them."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from rq_kg_pipeline.models import rq_codebook, triton_support
from rq_kg_pipeline.models.nearest_code import (
    KERNELS_MODULE, fused_code_sums, fused_level_residuals, fused_nearest_code, fused_residual_update, update_programs,
)
from rq_kg_pipeline.models.rq_codebook import RQCodebook, nearest_code, residual_search

SMALL_TILES = {"BLOCK_M": 16, "BLOCK_K": 32, "BLOCK_D": 16}  # several row, code and dim tiles on small inputs
SMALL_UPDATE = {"UPDATE_BLOCK_ROWS": 8, "UPDATE_BLOCK_D": 16}  # several row blocks and dimension steps


def _set(monkeypatch, constants: dict[str, object] | None) -> None:
    """Override the kernel module's launch constants (read at each call)."""
    kernels = triton_support.kernels(KERNELS_MODULE)
    for name, value in (constants or {}).items():
        monkeypatch.setattr(kernels, name, value)


@pytest.fixture
def tf32_products(monkeypatch) -> None:
    """TF32 tensor-core products also in Triton's interpreter (which computes every tl.dot in float32):
    operands of an input_precision="tf32" dot are rounded to TF32's 10 mantissa bits, as on the GPU."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return  # compiled: the GPU's own TF32
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    plain = interpreter.InterpreterBuilder.create_dot

    def create_dot(self, a, b, acc, precision, max_num_imprecise_acc):
        if precision == ir.INPUT_PRECISION.TF32 and a.data.dtype == np.float32:
            a = interpreter.TensorHandle(interpreter._round_f32_to_tf32(a.data), a.dtype)
            b = interpreter.TensorHandle(interpreter._round_f32_to_tf32(b.data), b.dtype)
        return plain(self, a, b, acc, precision, max_num_imprecise_acc)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)


def _distances64(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """[N, K] exact squared distances in float64."""
    x64, c64 = x.double(), codes.double()
    return (x64.pow(2).sum(1, keepdim=True) - 2 * x64 @ c64.t() + c64.pow(2).sum(1)).clamp(min=0)


def _separated(gen: torch.Generator, n: int, k: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [n, d], codes [k, d], nearest [n]): each row a small perturbation of a random code, the
    float64 gap to the second-best code checked to be > 1e-3 of the distance scale."""
    codes = torch.randn(k, d, generator=gen)
    target = torch.randint(0, k, (n,), generator=gen)
    x = codes[target] + 0.02 * torch.randn(n, d, generator=gen)
    dist = _distances64(x, codes)  # [n, k]
    two = dist.topk(2, dim=1, largest=False)
    scale = x.double().pow(2).sum(1) + codes.double().pow(2).sum(1).max()  # [n]
    assert torch.equal(two.indices[:, 0], target) and bool(((two.values[:, 1] - two.values[:, 0]) > 1e-3 * scale).all())
    return x, codes, target


def _near_ties(gen: torch.Generator, n: int, k: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [n, d], codes [k, d], nearest [n], float64 distances [n, k]): codes come in close pairs
    (c +- 0.05 u, at random positions), each row lies near one pair's bisector: the pair's distances
    differ by ~5e-5 of their size (below TF32's resolution, far above float32's), every other code
    is far. So the float64 argmin is the float32 one, and it is among any TF32 ranking's best two."""
    pairs = k // 2
    centres, axes = torch.randn(pairs, d, generator=gen), torch.randn(pairs, d, generator=gen)
    axes = axes / axes.norm(dim=1, keepdim=True)
    position = torch.randperm(k, generator=gen)[: 2 * pairs].view(pairs, 2)  # [pairs, 2] code slots of each pair
    codes = torch.randn(k, d, generator=gen)  # a spare slot when k is odd
    codes[position[:, 0]], codes[position[:, 1]] = centres + 0.05 * axes, centres - 0.05 * axes
    pair = torch.randint(0, pairs, (n,), generator=gen)
    offset = 0.3 * torch.randn(n, d, generator=gen)
    offset -= (offset * axes[pair]).sum(1, keepdim=True) * axes[pair]  # on the bisector
    shift = (0.5 + torch.rand(n, generator=gen)) * 5e-3 * torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    x = centres[pair] + offset + shift.unsqueeze(1) * axes[pair]  # [n, d]
    dist = _distances64(x, codes)
    top = dist.topk(3, dim=1, largest=False)
    assert torch.equal(top.indices[:, :2].sort(1).values, position[pair].sort(1).values)
    assert bool(((top.values[:, 1] - top.values[:, 0]) > 1e-6).all() and ((top.values[:, 2] - top.values[:, 1]) > 0.5).all())
    return x, codes, top.indices[:, 0], dist


@pytest.mark.parametrize("rerank", [True, False], ids=["rerank", "ranking_only"])
@pytest.mark.parametrize("tiles", [None, SMALL_TILES], ids=["default_tiles", "small_tiles"])
@pytest.mark.parametrize(("n", "k", "d"), [(130, 300, 13), (1, 2, 200), (97, 129, 33)])
def test_indices_equal_float64_argmin_on_separated_data(kernel_device, monkeypatch, rerank, tiles, n: int, k: int, d: int) -> None:
    gen = torch.Generator().manual_seed(n + k + d)
    x, codes, target = _separated(gen, n, k, d)
    _set(monkeypatch, {"RERANK": rerank, **(tiles or {})})
    got = fused_nearest_code(x.to(kernel_device), codes.to(kernel_device)).cpu()
    assert got.dtype == torch.long and got.shape == (n,)
    assert torch.equal(got, target) and torch.equal(got, nearest_code(x, codes, fused=False))


@pytest.mark.parametrize("tiles", [None, SMALL_TILES], ids=["default_tiles", "small_tiles"])
def test_rerank_returns_the_float32_argmin_on_near_ties(kernel_device, tf32_products, monkeypatch, tiles) -> None:
    """TF32 products alone pick the wrong code of a near-tied pair on many rows; re-scoring the best
    two in float32 gives the float64 argmin on every row (its float32 distance is the best's)."""
    gen = torch.Generator().manual_seed(20)
    x, codes, target, dist = _near_ties(gen, 160, 300, 24)
    x, codes = x.to(kernel_device), codes.to(kernel_device)
    _set(monkeypatch, {"INPUT_PRECISION": "tf32", **(tiles or {})})
    _set(monkeypatch, {"RERANK": False})
    ranking = fused_nearest_code(x, codes).cpu()
    assert (ranking != target).float().mean() > 0.1  # the data defeats TF32: the test can fail
    _set(monkeypatch, {"RERANK": True})
    got = fused_nearest_code(x, codes).cpu()
    rows = torch.arange(x.shape[0])
    best = dist.min(dim=1).values
    assert bool(((dist[rows, got] - best) <= 1e-6 * best).all())  # within float32 rounding of the optimum
    assert torch.equal(got, target)


@pytest.mark.parametrize("rerank", [True, False], ids=["rerank", "ranking_only"])
def test_ties_go_to_the_lowest_index(kernel_device, monkeypatch, rerank) -> None:
    gen = torch.Generator().manual_seed(3)
    codes = torch.randn(300, 13, generator=gen)  # default tiles: codes 0-127, 128-255, 256-299
    codes[[20, 299]] = codes[3].clone()  # same tile as the first copy, and the last (partial) tile
    codes[[150, 260]] = codes[140].clone()  # a later position in the first copy's tile, and a later tile
    codes[[100, 30]] = codes[280].clone()  # copies before the first one's tile
    small = 0.01 * torch.randn(13, generator=gen)
    codes[77], codes[201], codes[250] = -small, small, small  # smallest norms, equal bit for bit
    x = torch.cat([codes[[3, 140, 280]] + 0.01 * torch.randn(3, 13, generator=gen), torch.zeros(1, 13)])  # x = 0: dist = ||e||^2
    want = [3, 140, 30, 77]
    for tiles in (None, SMALL_TILES):
        _set(monkeypatch, {"RERANK": rerank, **(tiles or {})})
        assert fused_nearest_code(x.to(kernel_device), codes.to(kernel_device)).tolist() == want
    assert nearest_code(x, codes, fused=False).tolist() == want


def test_writes_only_its_output_row(kernel_device) -> None:
    gen = torch.Generator().manual_seed(4)
    x, codes, target = _separated(gen, 70, 40, 8)  # 70 rows: a partial row tile
    x, codes = x.to(kernel_device), codes.to(kernel_device)
    table = torch.full((3, 70), -1, dtype=torch.long, device=kernel_device)  # [Q, N]: row 1 written, row 2 follows it
    fused_nearest_code(x.double(), codes, codes.pow(2).sum(1), out=table[1])  # float64 x is searched in float32
    assert torch.equal(table[1].cpu(), target)
    assert bool((table[0] == -1).all() and (table[2] == -1).all())


def test_checks_and_route_choice(monkeypatch) -> None:
    x, codes = torch.randn(5, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="codes"):
        fused_nearest_code(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="out"):
        fused_nearest_code(x, codes, out=torch.empty(5, dtype=torch.int32))
    with pytest.raises(ValueError, match="codes_sq"):
        fused_nearest_code(x, codes, codes_sq=torch.ones(4))
    idx, parts = torch.zeros(5, dtype=torch.long), torch.empty(update_programs(5))
    with pytest.raises(ValueError, match="partials"):
        fused_residual_update(x, codes, idx, torch.empty(update_programs(5) + 1))
    with pytest.raises(ValueError, match="codes"):
        fused_residual_update(x, codes.int(), idx, parts)
    with pytest.raises(ValueError, match="valid"):
        fused_residual_update(x, codes, idx, parts, valid=torch.ones(5))
    with pytest.raises(ValueError, match="counts"):
        fused_residual_update(x, codes, idx, parts, counts=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="indices"):
        fused_level_residuals(x, codes.unsqueeze(0), idx, torch.ones(1))
    use = triton_support.use_triton
    assert not use(None, torch.device("cpu"), "fused") and use(True, torch.device("cpu"), "fused")
    assert not use(False, torch.device("cuda"), "fused")
    monkeypatch.setattr(triton_support, "available", lambda: False)
    assert not use(None, torch.device("cuda"), "fused")
    with pytest.raises(ValueError, match="fused=True needs Triton"):
        use(True, torch.device("cpu"), "fused")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(("n", "d", "constants"), [(70, 13, None), (45, 40, SMALL_UPDATE)], ids=["one_step", "small_blocks"])
def test_residual_update_equals_torch(kernel_device, monkeypatch, dtype, n: int, d: int, constants) -> None:
    """New residual (elsewhere, in place, not written), squared error over the valid rows and usage
    counts, against the same arithmetic in torch."""
    _set(monkeypatch, constants)
    gen = torch.Generator().manual_seed(n + d)
    source = torch.randn(n, d, generator=gen)
    codes = torch.randn(11, d, generator=gen, dtype=torch.float64).to(dtype)  # float64 codes: not float32 values
    idx = torch.randint(0, 11, (n,), generator=gen)
    idx[:20] = 4  # a popular code: many atomic additions to one count
    valid = torch.rand(n, generator=gen) > 0.3
    new = source.clone().sub_(codes[idx])  # torch's in-place rounding (float64 codes: subtracted in float64)
    on = dict(device=kernel_device)
    dev_source, dev_codes, dev_idx = source.to(**on), codes.to(**on), idx.to(**on)
    parts = torch.empty(update_programs(n), **on)
    out, counts = torch.full((n, d), float("nan"), **on), torch.zeros(11, dtype=torch.int32, **on)
    fused_residual_update(dev_source, dev_codes, dev_idx, parts, out=out, valid=valid.to(**on), counts=counts)
    assert torch.equal(out.cpu(), new) and torch.equal(dev_source.cpu(), source)  # the source is left as it was
    assert torch.equal(counts.cpu().long(), torch.bincount(idx[valid], minlength=11))
    assert torch.allclose(parts.sum().cpu(), (new.pow(2).sum(1) * valid).sum(), rtol=1e-5, atol=0)
    fused_residual_update(dev_source, dev_codes, dev_idx, parts, out=dev_source, counts=counts)  # in place, all rows
    assert torch.equal(dev_source.cpu(), new)
    assert torch.equal(counts.cpu().long(), torch.bincount(idx[valid], minlength=11) + torch.bincount(idx, minlength=11))
    assert torch.allclose(parts.sum().cpu(), new.pow(2).sum(), rtol=1e-5, atol=0)
    fused_residual_update(dev_source, dev_codes, dev_idx, parts)  # nothing written but the error
    assert torch.equal(dev_source.cpu(), new)
    assert torch.allclose(parts.sum().cpu(), new.clone().sub_(codes[idx]).pow(2).sum(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("levels", [1, 3])
def test_code_sums_equal_torch_level_by_level(kernel_device, monkeypatch, dtype, levels: int) -> None:
    _set(monkeypatch, SMALL_UPDATE)
    gen = torch.Generator().manual_seed(22)
    books = torch.randn(levels, 9, 20, generator=gen).to(dtype)
    indices = torch.randint(0, 9, (levels, 37), generator=gen)
    want = books[0, indices[0]]
    for q in range(1, levels):
        want = want + books[q, indices[q]]  # torch's rounding in the books' dtype, level 1 first
    got = fused_code_sums(books.to(kernel_device), indices.to(kernel_device)).cpu()
    assert got.dtype == dtype
    if dtype == torch.bfloat16 and levels > 1:  # Triton's interpreter truncates to bf16 where the GPU rounds to nearest
        size = sum(books[q, indices[q]].float().abs() for q in range(levels))  # bounds every partial sum
        assert bool(((got.float() - want.float()).abs() <= 2**-6 * size).all())
    else:
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="out"):
        fused_code_sums(books.to(kernel_device), indices.to(kernel_device), out=torch.empty(37, 20, dtype=torch.int32, device=kernel_device))


def _hierarchical(gen: torch.Generator, n: int, levels: int, k: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [n, d], codebooks [Q, K, d], codes [n, Q]): x = sum of one code per level plus noise, level
    scales 1, 0.05, 0.0025...: greedy residual search recovers the codes with wide margins."""
    books = torch.stack([torch.randn(k, d, generator=gen) * 0.05**q for q in range(levels)])  # [Q, K, d]
    codes = torch.randint(0, k, (n, levels), generator=gen)
    x = books[torch.arange(levels), codes].sum(1) + 1e-3 * 0.05 ** (levels - 1) * torch.randn(n, d, generator=gen)
    return x, books, codes


@pytest.mark.parametrize(("levels", "with_sum", "padded"), [(3, True, True), (3, False, False), (1, True, False)])
def test_residual_search_kernel_route_equals_matmul_route(kernel_device, monkeypatch, levels, with_sum, padded) -> None:
    gen = torch.Generator().manual_seed(5)
    x, books, codes = _hierarchical(gen, 150, levels, 40, 12)
    valid = torch.rand(150, generator=gen) > 0.3 if padded else None
    matmul = residual_search(x, books, valid=valid, with_sum=with_sum)  # on CPU the default is the matmul route
    dev_x = x.to(kernel_device)
    seen = []  # residuals handed to before_level: level 0 gets x itself
    with monkeypatch.context() as patch:  # the kernel route does no addmm
        patch.setattr(torch, "addmm", lambda *a, **k: pytest.fail("addmm called on the kernel route"))
        fused = residual_search(dev_x, books.to(kernel_device), valid=None if valid is None else valid.to(kernel_device),
                                with_sum=with_sum, fused=True, before_level=lambda q, r: seen.append(r.cpu().clone()))
    assert torch.equal(matmul.indices, codes) and torch.equal(fused.indices.cpu(), matmul.indices)
    assert torch.equal(fused.counts.cpu(), matmul.counts) and fused.counts.dtype == torch.long
    assert (fused.summed is None) == (not with_sum) and (not with_sum or torch.equal(fused.summed.cpu(), matmul.summed))
    assert torch.allclose(fused.sq_error.cpu(), matmul.sq_error, rtol=1e-5, atol=0)
    assert torch.equal(dev_x.cpu(), x)  # level 0 reads x itself and never writes it
    residual = x
    for q in range(levels):
        assert torch.equal(seen[q], residual)
        residual = residual - books[q, codes[:, q]]
    monkeypatch.setattr(rq_codebook, "fused_nearest_code", lambda *a, **k: pytest.fail("kernel called on CPU by default"))
    assert torch.equal(residual_search(x, books).indices, codes)


def test_level_residuals_equal_torch_recomputation(kernel_device, monkeypatch) -> None:
    _set(monkeypatch, SMALL_UPDATE)
    gen = torch.Generator().manual_seed(21)
    z, books, codes = _hierarchical(gen, 37, 3, 9, 20)
    indices = codes.t().contiguous()  # [Q, N]
    keep = (torch.rand(37, generator=gen) > 0.4).float()
    grad_zq, commit = torch.randn(37, 20, generator=gen), torch.tensor([0.5, -1.0, 2.0])
    residual, counted, grad = z.clone(), [], grad_zq.clone()
    for q in range(3):
        residual = residual - books[q, indices[q]]
        counted.append(residual * keep.unsqueeze(1))
        grad = grad + counted[-1] * commit[q]
    on = dict(device=kernel_device)
    got_counted, scatter, got_grad = fused_level_residuals(z.to(**on), books.to(**on), indices.to(**on), commit.to(**on),
                                                           keep=keep.to(**on), grad_zq=grad_zq.to(**on))
    assert torch.equal(got_counted.cpu(), torch.cat(counted)) and torch.allclose(got_grad.cpu(), grad, rtol=1e-6, atol=1e-6)
    assert torch.equal(scatter.cpu(), (indices + 9 * torch.arange(3).unsqueeze(1)).reshape(-1))
    none_counted, none_scatter, plain = fused_level_residuals(z.to(**on), books.to(**on), indices.to(**on), commit.to(**on),
                                                              need_books=False)
    assert none_counted is None and none_scatter is None
    unkept = z.clone()  # no keep: every row counts; no grad_zq: starts from 0
    want = torch.zeros_like(z)
    for q in range(3):
        unkept = unkept - books[q, indices[q]]
        want = want + unkept * commit[q]
    assert torch.allclose(plain.cpu(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("padded", "max_elements"), [(False, None), (True, None), (True, 8 * 40)], ids=["all", "padded", "blocks"])
def test_rq_codebook_training_call_with_kernel_route(kernel_device, padded, max_elements) -> None:
    """A quantizer call (k-means init, revival, losses, gradients) gives the same result on both routes,
    also with padding rows and with the backward in several row blocks (40 // 2 = 20 rows each)."""
    gen = torch.Generator().manual_seed(6)
    x, _, _ = _hierarchical(gen, 96, 2, 16, 8)
    valid = torch.tensor([True, False, True] * 10 + [True, True]) if padded else None  # [32] sequences
    upstream = torch.randn(32, 3, 8, generator=gen)
    results = []
    device = kernel_device  # both routes on one device: the same random draws (k-means seeds, revival)
    for fused in (False, True):
        torch.manual_seed(7)
        rq = RQCodebook(16, 8, num_quantizers=2, kmeans_iters=3, dead_code_patience=1, fused_search=fused,
                        max_elements=max_elements).to(device)
        z = x.view(32, 3, 8).to(device).requires_grad_()
        rq.quantize(z.detach())  # init
        out = rq.quantize(z, None if valid is None else valid.to(device))
        (out.loss + (out.z_q * upstream.to(device)).sum()).backward()
        results.append([t.cpu() for t in (out.indices, out.z_q.detach(), out.level_losses, z.grad, rq.codebooks.grad)])
    assert torch.equal(results[0][0], results[1][0])
    for want, got in zip(results[0][1:], results[1][1:]):
        assert torch.allclose(want, got, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_recipe_shapes_agree_with_matmul_route(monkeypatch) -> None:
    """[16384, 200] x [1024, 200]: the default search (TF32 ranking, float32 re-check) agrees with the
    float32 addmm route on >= 99.99% of rows (plain TF32: ~99.88%), and no code it picks is worse than
    the optimum by more than TF32's error."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # the reference: float32 addmm
    gen = torch.Generator(device="cuda").manual_seed(8)
    x = torch.randn(16384, 200, device="cuda", generator=gen)
    codes = torch.randn(1024, 200, device="cuda", generator=gen)
    matmul = nearest_code(x, codes, fused=False)
    fused_nearest_code(x, codes)  # compile before watching for synchronisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fused = fused_nearest_code(x, codes)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    dist = _distances64(x, codes)  # [N, K] float64
    best = dist.min(dim=1).values  # [N]
    rows = torch.arange(x.shape[0], device="cuda")
    agree = (fused == matmul).double().mean().item()
    excess = (dist[rows, fused] - best) / best  # [N] relative float64 excess over the optimum
    print(f"\ntf32 + float32 re-check vs addmm: {agree:.6f} of rows agree; relative excess over the float64 optimum: "
          f"max {excess.max().item():.2e}, {int((excess > 1e-6).sum())} rows > 1e-6")
    assert agree >= 0.9999
    assert bool((excess <= 1e-4).all())  # a miss (the best ranked third by TF32) costs at most TF32's error
    assert torch.equal(fused_nearest_code(x, codes), fused)  # the same on every run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_of_the_kernel_route() -> None:
    """The whole kernel route of residual_search is capturable and gives the same result on every replay."""
    gen = torch.Generator(device="cuda").manual_seed(9)
    books = torch.randn(3, 300, 200, device="cuda", generator=gen) * torch.tensor([1.0, 0.3, 0.1], device="cuda").view(3, 1, 1)
    x = torch.randn(1000, 200, device="cuda", generator=gen)
    valid = torch.rand(1000, device="cuda", generator=gen) > 0.2
    residual_search(x, books, valid=valid, fused=True)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = residual_search(x, books, valid=valid, fused=True)
    x.copy_(books[0, torch.arange(1000, device="cuda") % 300] + 0.001 * torch.randn(1000, 200, device="cuda", generator=gen))
    graph.replay()
    want = residual_search(x, books, valid=valid, fused=True)
    assert torch.equal(captured.indices[:, 0], torch.arange(1000, device="cuda") % 300)
    for got, ref in zip(captured, want):
        assert torch.equal(got, ref)
    graph.replay()
    assert torch.equal(captured.sq_error, want.sq_error) and torch.equal(captured.summed, want.summed)
