"""CompGCN's mult aggregation, one layer forward + backward (width 200, bf16 autocast, with the
layer's two direction products): the cuSPARSE route against the Triton segment sums, and the
Triton kernels' launch settings (edges per load, warps, edges per program) swept.

On CUDA each variant is replayed as a CUDA graph (device time without launches); on CPU it runs
eagerly through Triton's interpreter, a smoke run for a small KG only.

    python benchmarks/bench_message_passing.py --data ../shared/data/FB15k-237
    TRITON_INTERPRET=1 python benchmarks/bench_message_passing.py --device cpu --data <UMLS folder> --repeats 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_step_stages import replayed
from common import DEFAULT_DATA, describe_device, load_benchmark, print_table, time_calls

from rq_kg_pipeline.models import triton_support
from rq_kg_pipeline.models.message_passing import NativeMessagePassing, _TritonMultPlans
from rq_kg_pipeline.models.segment_sums import CHUNK_EDGES, KERNELS_MODULE

WIDTH = 200
# (edges per load, warps per program, edges per program); the first is the modules' default
SETTINGS = [(4, 1, CHUNK_EDGES), (2, 1, 64), (8, 1, 64), (4, 2, 64), (4, 1, 32), (4, 1, 256)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    device = torch.device(args.device)
    graph = load_benchmark(args.data).graph
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(graph.num_entities, WIDTH, generator=gen).to(device, torch.bfloat16).requires_grad_()  # [M, d]
    rel = torch.randn(2 * graph.num_relations, WIDTH, generator=gen).to(device, torch.bfloat16).requires_grad_()  # [2R, d]
    weight = torch.randn(WIDTH, WIDTH, generator=gen).to(device) / WIDTH**0.5  # [d, d]

    def timed(passing: NativeMessagePassing) -> list[float]:
        def layer() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
                original, inverse = passing.aggregate(h, rel, "mult")  # [M, d] each
                total = (original @ weight + inverse @ weight).float().sum()
            total.backward()

        step = replayed(layer).replay if device.type == "cuda" else layer
        return time_calls(step, args.repeats, device, warmup=1 if device.type == "cuda" else 0)

    rows = [("sparse products (cuSPARSE on CUDA, MKL on CPU)", timed(NativeMessagePassing(graph, device, triton=False)), "-")]
    kernels = triton_support.kernels(KERNELS_MODULE)
    default = (kernels.BLOCK_EDGES, kernels.NUM_WARPS)
    triton_route = NativeMessagePassing(graph, device, triton=True)
    for edges_per_load, warps, chunk in SETTINGS:
        kernels.BLOCK_EDGES, kernels.NUM_WARPS = edges_per_load, warps
        triton_route.triton = _TritonMultPlans.build(graph.to("cpu"), device, chunk)
        name = f"Triton: {edges_per_load} edges per load, {warps} warp(s), <= {chunk} edges per program"
        rows.append((name, timed(triton_route), "-"))
    kernels.BLOCK_EDGES, kernels.NUM_WARPS = default
    print_table(rows, f"CompGCN mult aggregation, one layer forward + backward (d {WIDTH}, bf16) on {describe_device(device)}, "
                      f"{graph.num_entities} entities, {graph.num_edges} edges" + (", CUDA-graph replays" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
