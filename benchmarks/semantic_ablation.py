"""Semantic-term ablation over weights and seeds: codes-only link prediction, code statistics and
text-neighbour agreement per run, then mean and spread per weight (plain library, CPU or CUDA).

Same data, model and epochs for every run; only ``semantic_weight`` and the seed change. Text
embeddings come from a file (benchmarks/embed_entity_texts.py, or the entity_text_embeddings
node's data/05_model_input/<kg>/text_embeddings.pt), so a GPU machine needs no text model.

    python benchmarks/semantic_ablation.py --env base --data <umls dir> --num-quantizers 2 \\
        --text-embeddings data/05_model_input/umls/text_embeddings.pt --weights 0 0.1 1 --seeds 0 1 2 --out /tmp/abl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
import yaml

from rq_kg_pipeline.codes.extraction import extract_codes
from rq_kg_pipeline.evaluation.link_prediction import evaluate_splits
from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.kg.graph import build_graph
from rq_kg_pipeline.kg.indexing import SPLITS, index_kg
from rq_kg_pipeline.kg.tsv import read_triples
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.semantics.alignment import neighbour_agreement
from rq_kg_pipeline.semantics.loss import TextTargets
from rq_kg_pipeline.training.config import TrainConfig
from rq_kg_pipeline.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]
SHOWN = {
    "codes_only/test/mrr": "codes-only test MRR",
    "codes_only/test/hits@1": "H@1",
    "codes_only/test/hits@10": "H@10",
    "unique_code_rate": "unique-code rate",
    "mean_utilisation": "mean utilisation",
    "text_neighbour_agreement": "text-neighbour agreement",
    "train_seconds": "training s",
}


def one_run(model_config: dict, config: TrainConfig, data: dict, text: TextTargets, checkpoints: Path) -> dict[str, float]:
    """Train one (weight, seed), then measure its codes."""
    graph, ids, filter_index = data["graph"], data["ids"], data["filter_index"]
    config_model = {**model_config, "semantic_dim": text.dim if config.semantic_weight > 0 else 0}
    torch.manual_seed(config.seed)
    model = RQGCN(graph.num_entities, graph.num_relations, **config_model)
    result = fit(model, graph, ids["train"], ids["valid"], filter_index, config, checkpoint_dir=checkpoints,
                 progress=False, model_config=config_model, text=text)  # fmt: skip
    model.load_state_dict(result.best_state_dict)
    model.eval()
    device = next(model.parameters()).device
    extracted = extract_codes(model, graph)
    metrics = evaluate_splits(model, graph, extracted.codes.to(device), {"valid": ids["valid"], "test": ids["test"]},
                              filter_index.to(device), batch_size=config.eval_batch_size)  # fmt: skip
    stats = extracted.statistics
    levels = int(stats["num_quantizers"])
    with torch.no_grad():
        vectors = model.entity_vectors_from_codes(extracted.codes.to(device).long()).float().cpu()  # [M, D]
    return {
        **{k: metrics[k] for k in SHOWN if k in metrics},
        "unique_code_rate": stats["unique_code_rate"],
        "mean_utilisation": sum(stats[f"utilisation_l{q + 1}"] for q in range(levels)) / levels,
        **neighbour_agreement(vectors, text.embeddings, text.mask),
        "train_seconds": result.train_seconds,
        "best_epoch": result.best_epoch,
    }


def summary_table(runs: pd.DataFrame) -> str:
    """Markdown: one row per weight, mean ± standard deviation over seeds."""
    header = "| semantic weight | seeds | " + " | ".join(SHOWN.values()) + " |"
    lines = [header, "| " + " | ".join("---" for _ in range(len(SHOWN) + 2)) + " |"]
    for weight, group in runs.groupby("semantic_weight"):
        cells = []
        for key in SHOWN:
            values = group[key].tolist()
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {spread:.1f}" if key == "train_seconds"
                         else f"{statistics.mean(values):.3f} ± {spread:.3f}")
        lines.append(f"| {weight:g} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="base", help="conf/<env>/parameters_training.yml gives model and fit settings")
    parser.add_argument("--data", type=Path, required=True, help="KG folder with train/valid/test.txt")
    parser.add_argument("--text-embeddings", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--num-quantizers", type=int, default=None, help="replaces 'auto' (UMLS: 2)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    params = yaml.safe_load((ROOT / "conf" / args.env / "parameters_training.yml").read_text())["training"]
    model_config = {**params["model"], "conve_dropout": tuple(params["model"]["conve_dropout"])}
    if args.num_quantizers is not None:
        model_config["num_quantizers"] = args.num_quantizers
    if model_config["num_quantizers"] == "auto":
        parser.error("the config says num_quantizers: auto; give --num-quantizers")
    base = TrainConfig(**params["fit"])
    base = replace(base, epochs=args.epochs or base.epochs, device=args.device or base.device)

    indexed = index_kg({s: read_triples(args.data / f"{s}.txt") for s in SPLITS}, unseen_policy="keep")
    ids = {s: torch.from_numpy(a) for s, a in indexed.splits.items()}
    graph = build_graph(ids["train"], indexed.num_entities, indexed.num_relations)
    data = {"graph": graph, "ids": ids, "filter_index": FilterIndex.build(list(ids.values()), graph.num_entities, graph.num_relations)}
    payload = torch.load(args.text_embeddings, map_location="cpu", weights_only=True)
    if payload.get("entities") != indexed.entities["label"].astype(str).tolist():
        raise ValueError(f"{args.text_embeddings}: not this KG's entities in this order")
    text = TextTargets.from_payload(payload)
    if text is None:
        raise ValueError(f"{args.text_embeddings} holds no embeddings ({payload.get('status')})")

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for weight in args.weights:
        for seed in args.seeds:
            started = time.perf_counter()
            config = replace(base, semantic_weight=weight, seed=seed)
            row = {"semantic_weight": weight, "seed": seed,
                   **one_run(model_config, config, data, text, args.out / "checkpoints" / f"w{weight:g}_s{seed}")}  # fmt: skip
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                  f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    runs = pd.DataFrame(rows)
    runs.to_csv(args.out / "semantic_ablation.csv", index=False)
    device = config.resolve_device()
    title = (f"{args.data.name}, {base.epochs} epochs, device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; "
             f"mean ± std over seeds {args.seeds}")  # fmt: skip
    table = f"{title}\n\n{summary_table(runs)}\n"
    (args.out / "semantic_ablation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
