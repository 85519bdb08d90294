"""Shared pieces of the benchmark scripts: FB15k-237 loading, the recipe's settings, timing tables.

Plain library use (no Kedro) so the scripts run wherever torch, pandas and yaml are.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.models import triton_support
from rq_kg_pipeline.kg.graph import KGGraph, build_graph
from rq_kg_pipeline.kg.indexing import SPLITS, index_kg
from rq_kg_pipeline.kg.tsv import read_triples
from rq_kg_pipeline.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "FB15k-237"


@dataclass
class Benchmark:
    """FB15k-237 as the training loop sees it."""

    graph: KGGraph
    ids: dict[str, torch.Tensor]  # split -> [N, 3] id triples
    filter_index: FilterIndex


def load_benchmark(data: Path) -> Benchmark:
    """Read, index (unseen valid/test entities kept, as the fb15k237 env does) and build the graph."""
    indexed = index_kg({s: read_triples(data / f"{s}.txt") for s in SPLITS}, unseen_policy="keep")
    ids = {s: torch.from_numpy(a) for s, a in indexed.splits.items()}
    graph = build_graph(ids["train"], indexed.num_entities, indexed.num_relations)
    return Benchmark(graph, ids, FilterIndex.build(list(ids.values()), graph.num_entities, graph.num_relations))


def recipe(env: str = "fb15k237") -> tuple[dict[str, Any], TrainConfig]:
    """(model keyword arguments, TrainConfig) from conf/<env>/parameters_training.yml."""
    params = yaml.safe_load((ROOT / "conf" / env / "parameters_training.yml").read_text())["training"]
    model_config = {**params["model"], "conve_dropout": tuple(params["model"]["conve_dropout"])}
    return model_config, TrainConfig(**params["fit"])


def add_triton_flag(parser: Any) -> None:
    """``--no-triton``: the routes without Triton kernels on CUDA, to compare with them."""
    parser.add_argument("--triton", action=argparse.BooleanOptionalAction, default=True,
                        help="Triton kernels on CUDA for CompGCN's mult aggregation and the code search "
                             "(--no-triton: cuSPARSE products, addmm + min)")


def apply_triton_flag(enabled: bool) -> None:
    """Models built afterwards take the routes without Triton when ``enabled`` is false."""
    if not enabled:
        triton_support.available = lambda: False


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (device synced)."""
    for _ in range(warmup):
        fn()
    sync(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"


def print_table(rows: list[tuple[str, list[float], str]], title: str) -> None:
    """One line per measure: name, median, min, max (seconds) and a free-form memory column."""
    print(f"\n{title}")
    print(f"| measure | median s | min s | max s | runs | memory |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, seconds, memory in rows:
        print(f"| {name} | {statistics.median(seconds):.4f} | {min(seconds):.4f} | {max(seconds):.4f} | {len(seconds)} | {memory} |")
    sys.stdout.flush()
