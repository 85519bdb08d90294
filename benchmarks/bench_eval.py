"""Validation pass (filtered MRR from codes, both directions) and code extraction on FB15k-237.

The validation pass is the training loop's own (``training.loop._valid_metrics``): codes of every
entity, then every distinct valid query scored from decoded codes and ranked, filtered; its
first stage (codes of every entity) is also timed alone.
Extraction is ``codes.extraction.extract_codes`` (codes, embeddings, statistics, disambiguation).
Weights: a trained model artifact (``--model``, as the training pipeline writes it) or the
recipe's fresh initialisation (same cost; ties differ).

    python benchmarks/bench_eval.py --device cpu --repeats 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import DEFAULT_DATA, describe_device, load_benchmark, peak_rss_gib, print_table, recipe, time_calls

from rq_kg_pipeline.codes.extraction import extract_codes
from rq_kg_pipeline.models.persistence import load_model
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.training.loop import _valid_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="model artifact (.pt) of a training run")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default: the recipe's eval_batch_size")
    args = parser.parse_args()

    device = torch.device(args.device)
    bench = load_benchmark(args.data)
    model_config, config = recipe()
    batch_size = args.eval_batch_size or config.eval_batch_size
    if args.model:
        model = load_model(torch.load(args.model, weights_only=True, map_location="cpu"), device="cpu")
    else:
        torch.manual_seed(config.seed)
        model = RQGCN(bench.graph.num_entities, bench.graph.num_relations, **model_config)
    model = model.to(device).eval()
    graph = bench.graph.to(device)
    valid, filters = bench.ids["valid"].to(device), bench.filter_index.to(device)

    metrics = {}

    def valid_pass() -> None:
        metrics.update(_valid_metrics(model, graph, valid, filters, batch_size))

    def codes_only() -> None:
        model.cal_allent_codes(graph, batch_size)

    rows = []
    for name, fn in (("validation pass (17,535 triples, both directions)", valid_pass),
                     ("  of which: codes of all entities (encode, transformer, quantizer)", codes_only),
                     ("extraction of all codes", lambda: extract_codes(model, graph))):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_calls(fn, args.repeats, device)
        memory = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated" if device.type == "cuda"
                  else f"{peak_rss_gib():.2f} GiB peak RSS (process)")
        rows.append((name, seconds, memory))
    print_table(rows, f"FB15k-237 evaluation on {describe_device(device)}, batches of {batch_size}; valid MRR {metrics['valid_mrr']:.4f}")


if __name__ == "__main__":
    main()
