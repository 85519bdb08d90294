"""Median training step of the FB15k-237 recipe (batch 1024, L 16, K 1024, Q 4), CPU or CUDA.

Times the training loop's own step (``training.loop.train_step`` + ``optimizer.step()``) on
real batches, after warm-up steps, and reports peak memory (RSS on CPU, allocated on CUDA).

    python benchmarks/bench_train_step.py --device cpu --steps 10
    python benchmarks/bench_train_step.py --device cuda --steps 100 --profile
"""

from __future__ import annotations

import argparse
import itertools
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from common import DEFAULT_DATA, add_triton_flag, apply_triton_flag, describe_device, load_benchmark, peak_rss_gib, print_table, recipe, sync, time_calls

from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.training.cuda_graph import GraphedStep
from rq_kg_pipeline.training.losses import compiled_structure_loss, structure_loss
from rq_kg_pipeline.training.loop import compiled_for_training, cudnn_autotune, graphed_train_step, padded_heads, train_step
from rq_kg_pipeline.training.queries import TrainQueries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (a CUDA graph is recorded on the 4th)")
    parser.add_argument("--backend", default=None, help="message passing backend (default: the recipe's)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: the recipe's (CUDA only)")
    parser.add_argument("--profile", action="store_true", help="print the torch profiler's top operators of 3 steps")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile ConvE and the sequence encoder (default: the recipe's torch_compile, CUDA only)")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None, help="default: the recipe's (CUDA only)")
    add_triton_flag(parser)
    args = parser.parse_args()
    apply_triton_flag(args.triton)

    device = torch.device(args.device)
    bench = load_benchmark(args.data)
    model_config, config = recipe()
    if args.backend:
        model_config["backend"] = args.backend
    config = replace(config, bf16=config.bf16 if args.bf16 is None else args.bf16)
    use_graphs = device.type == "cuda" and (config.cuda_graphs if args.cuda_graphs is None else args.cuda_graphs)
    torch.manual_seed(config.seed)
    model = RQGCN(bench.graph.num_entities, bench.graph.num_relations, **model_config).to(device).train()
    graph = bench.graph.to(device)
    use_compile = device.type == "cuda" and (config.torch_compile if args.compile is None else args.compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type == "cuda", capturable=use_graphs)
    queries = TrainQueries.build(bench.ids["train"], graph.num_entities, graph.num_relations)
    generator = torch.Generator().manual_seed(config.seed)
    batches = itertools.chain.from_iterable(
        queries.batches(
            config.batch_size, generator, config.label_smoothing, device=device, pad_heads=padded_heads(config, graph) if use_graphs else 0
        )
        for _ in itertools.count()
    )
    use_bf16 = config.bf16 and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)) if use_bf16 else nullcontext
    graphed: GraphedStep | None = None

    def step() -> None:
        batch = next(batches)
        if graphed is not None:
            graphed(batch)
            return
        train_step(model, graph, batch, optimizer, config, autocast, structure_fn=structure_fn)
        optimizer.step()

    with cudnn_autotune(device), compiled_for_training(model, use_compile) as compiled:
        structure_fn = compiled_structure_loss() if compiled else structure_loss  # as fit chooses
        graphed = graphed_train_step(model, graph, optimizer, config, autocast, structure_fn=structure_fn) if use_graphs else None
        seconds = time_calls(step, args.steps, device, warmup=args.warmup)
        memory = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated" if device.type == "cuda"
                  else f"{peak_rss_gib():.2f} GiB peak RSS")
        print_table([("training step (batch 1024)", seconds, memory)],
                    f"FB15k-237 training step on {describe_device(device)}, backend {model_config['backend']}, "
                    f"bf16 {use_bf16}, compile {use_compile}, CUDA graphs {use_graphs}"
                    + (f" ({graphed.replays} replays, {graphed.eager_steps} eager steps)" if graphed else "")
                    + f", {queries.num_batches(config.batch_size)} steps per epoch")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with profile(activities=activities) as prof:
                for _ in range(3):
                    step()
                sync(device)
            sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(prof.key_averages().table(sort_by=sort, row_limit=45, max_name_column_width=70))


if __name__ == "__main__":
    main()
