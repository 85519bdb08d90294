"""GPU time of each stage of the FB15k-237 training step (forward + backward), each replayed as a CUDA graph.

Where the device time of a step goes once launches cost nothing (the training loop replays the
whole step as one CUDA graph): the CompGCN encoder over the full graph, the latent sequences of
the batch's (padded) distinct heads, the residual quantizer, the decoder with ConvE and the BCE
loss, and Adam's update. CUDA only.

    python benchmarks/bench_step_stages.py --data ../shared/data/FB15k-237 [--compile]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import DEFAULT_DATA, add_triton_flag, apply_triton_flag, describe_device, load_benchmark, print_table, recipe, time_calls

from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.training.losses import compiled_structure_loss, structure_loss
from rq_kg_pipeline.training.loop import compiled_for_training, cudnn_autotune, padded_heads
from rq_kg_pipeline.training.queries import TrainQueries


def replayed(fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
    """``fn`` warmed up on a side stream, then recorded as a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def print_kernels(name: str, fn: Callable[[], None], calls: int = 3) -> None:
    """The top CUDA kernels of ``calls`` runs of ``fn``, with their device time per call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    times: dict[str, list[float]] = {}  # kernel name -> [device us, launches]
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = times.setdefault(event.name, [0.0, 0])
            entry[0] += event.time_range.elapsed_us() / calls
            entry[1] += 1
    print(f"\n{name}: {sum(us for us, _ in times.values()):.0f} us of kernels per call")
    for kernel, (us, launches) in sorted(times.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {us:8.1f} us  {launches // calls:3d}x  {kernel[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--compile", action="store_true", help="ConvE and the sequence encoder compiled, as torch_compile trains")
    parser.add_argument("--profile", action="store_true", help="also print each stage's top CUDA kernels (3 unrecorded calls)")
    add_triton_flag(parser)
    args = parser.parse_args()
    apply_triton_flag(args.triton)
    device = torch.device("cuda")
    bench = load_benchmark(args.data)
    model_config, config = recipe()
    torch.manual_seed(config.seed)
    model = RQGCN(bench.graph.num_entities, bench.graph.num_relations, **model_config).to(device).train()
    graph = bench.graph.to(device)
    queries = TrainQueries.build(bench.ids["train"], graph.num_entities, graph.num_relations)
    generator = torch.Generator().manual_seed(config.seed)
    batch = next(queries.batches(config.batch_size, generator, config.label_smoothing, device=device, pad_heads=padded_heads(config, graph)))
    bf16 = lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)  # noqa: E731
    with torch.no_grad():  # k-means initialisation of the codebooks, outside the timed stages
        model(graph, batch.heads, batch.rels, batch.unique_heads, batch.head_index, None, batch.valid_heads)
    # Each stage's inputs are leaves, so a stage's backward stops at its own border.
    ent, rel = (t.detach().requires_grad_() for t in model.encode(graph))  # [M, D], [2R, D]
    head_vecs = ent.detach().index_select(0, batch.unique_heads).requires_grad_()  # [P, D]
    with bf16():
        latents = model.latent_sequence(head_vecs).detach().requires_grad_()  # [P, L, D]
    quantized = latents.detach().float().requires_grad_()  # [P, L, D]

    def encoder() -> None:
        with bf16():
            e, r = model.encode(graph)
        (e.float().sum() + r.float().sum()).backward()

    def latent_sequence() -> None:
        with bf16():
            z = model.latent_sequence(head_vecs)
        z.float().sum().backward()

    def quantizer() -> None:
        with bf16():
            out = model.quantizer.quantize(latents, batch.valid_heads)
        (out.loss + out.z_q.float().sum()).backward()

    def decoder_conve_loss() -> None:
        with bf16():
            decoded = model.aggregate(quantized)  # [P, D]
            logits = model.score(decoded.index_select(0, batch.head_index), batch.rels, rel, ent)  # [B, M]
        loss = structure_fn(logits, batch.labels) + F.mse_loss(decoded.float(), head_vecs)
        loss.backward()

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True, capturable=True)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    stages = [
        ("CompGCN encoder, full graph", encoder),
        ("latent sequences of the distinct heads", latent_sequence),
        ("residual quantizer", quantizer),
        ("decoder + ConvE + BCE", decoder_conve_loss),
        ("Adam (fused, capturable)", optimizer.step),
    ]
    rows = []
    with cudnn_autotune(device), compiled_for_training(model, args.compile) as compiled:
        structure_fn = compiled_structure_loss() if compiled else structure_loss  # as fit chooses
        for name, fn in stages:
            graph_of_stage = replayed(fn)
            rows.append((name, time_calls(graph_of_stage.replay, args.repeats, device, warmup=3), "-"))
            if args.profile:
                print_kernels(name, fn)
    print_table(rows, f"FB15k-237 training step by stage on {describe_device(device)}, bf16, compile {args.compile} "
                      f"(each stage forward + backward, replayed as a CUDA graph)")


if __name__ == "__main__":
    main()
