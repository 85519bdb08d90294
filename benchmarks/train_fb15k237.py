"""Train the seed's FB15k-237 recipe for a time budget and report speed and quality.

Plain library use (no Kedro), so it runs wherever torch and pandas are: a GPU machine
included. Settings come from conf/fb15k237/parameters_training.yml (one source of truth).
Training advances in chunks of ``--chunk-epochs`` (a multiple of ``--eval-every``) through the
loop's own checkpoint/resume, and stops at ``--epochs`` or once ``--minutes`` have passed; a
rerun of the same command resumes. Every validation is printed.

    python benchmarks/train_fb15k237.py --data ../shared/data/FB15k-237 --out /tmp/fb --minutes 7
    torchrun --standalone --nproc_per_node=2 benchmarks/train_fb15k237.py ...   # data-parallel, one GPU each

With ``--text-embeddings PATH`` (made on a CPU machine by benchmarks/embed_entity_texts.py) the
semantic term trains with weight ``--semantic-weight`` (default: the config's); without, it is off.

Writes to --out: history.csv, link_prediction.json (valid/test, codes only / continuous /
shuffled codes), code_statistics.json, and the model artifact split into files of < 15 MB
(model.part*.pt; ``load_parts`` reassembles it).
"""

from __future__ import annotations

import argparse
import json
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
from rq_kg_pipeline.models.persistence import model_artifact
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.semantics.alignment import neighbour_agreement
from rq_kg_pipeline.semantics.loss import TextTargets
from rq_kg_pipeline.training.checkpoint import epoch_checkpoints
from rq_kg_pipeline.training.config import TrainConfig
from rq_kg_pipeline.training.distributed import init_from_env
from rq_kg_pipeline.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]
PART_BYTES = 15 * 2**20


def save_parts(artifact: dict, out: Path) -> list[Path]:
    """Split the artifact's state dict over files below PART_BYTES each (transfer limits);
    a tensor larger than that is cut into row blocks named ``name@block``."""
    pieces: list[tuple[str, torch.Tensor]] = []
    for name, tensor in artifact["state_dict"].items():
        rows = max(1, PART_BYTES // max(1, tensor[0].numel() * tensor.element_size())) if tensor.ndim else 1
        blocks = tensor.split(rows) if tensor.ndim and tensor.numel() * tensor.element_size() > PART_BYTES else [tensor]
        pieces += [(f"{name}@{i}" if len(blocks) > 1 else name, b.clone()) for i, b in enumerate(blocks)]
    parts, current, size = [], {}, 0
    for name, tensor in pieces:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > PART_BYTES:
            parts.append(current)
            current, size = {}, 0
        current[name], size = tensor, size + nbytes
    parts.append(current)
    paths = []
    for i, part in enumerate(parts):
        payload = {**artifact, "state_dict": part} if i == 0 else {"state_dict": part}
        paths.append(out / f"model.part{i}.pt")
        torch.save(payload, paths[-1])
    return paths


def load_parts(folder: Path) -> dict:
    """Inverse of :func:`save_parts`: one artifact with whole tensors."""
    files = sorted(folder.glob("model.part*.pt"), key=lambda p: int(p.stem.removeprefix("model.part")))
    artifact = torch.load(files[0], weights_only=True)
    for path in files[1:]:
        artifact["state_dict"].update(torch.load(path, weights_only=True)["state_dict"])
    blocks: dict[str, list[tuple[int, torch.Tensor]]] = {}
    state = {}
    for name, tensor in artifact["state_dict"].items():
        base, _, index = name.partition("@")
        if index:
            blocks.setdefault(base, []).append((int(index), tensor))
        else:
            state[name] = tensor
    state.update({base: torch.cat([t for _, t in sorted(parts)]) for base, parts in blocks.items()})
    artifact["state_dict"] = state
    return artifact


def load_text_targets(path: Path, entity_labels: list[str]) -> TextTargets:
    """Text embeddings saved by embed_entity_texts.py (or the entity_text_embeddings node), checked
    to follow this script's entity order."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("entities") != entity_labels:
        raise ValueError(f"{path}: its entities are not this KG's entities in this order; recompute it from the same data")
    targets = TextTargets.from_payload(payload)
    if targets is None:
        raise ValueError(f"{path} holds no embeddings ({payload.get('status')})")
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "FB15k-237")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's (800)")
    parser.add_argument("--eval-every", type=int, default=None, help="default: the config's")
    parser.add_argument("--minutes", type=float, default=1e9, help="stop after the chunk that passes this")
    parser.add_argument("--chunk-epochs", type=int, default=100,
                        help="epochs per fit call, rounded up to a multiple of --eval-every (each call resumes, re-records, re-warms)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (all processes together); default: the config's")
    parser.add_argument("--seed", type=int, default=None, help="default: the config's")
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience (0: off); default: the config's")
    parser.add_argument("--checkpoints", type=Path, default=None, help="default: OUT/checkpoints")
    parser.add_argument("--text-embeddings", type=Path, default=None, help="entity text embeddings (.pt) for the semantic term")
    parser.add_argument("--semantic-weight", type=float, default=None,
                        help="weight of the semantic term (default: the config's with --text-embeddings, else 0)")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None, help="default: the config's")
    parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None, help="default: the config's")
    args = parser.parse_args()
    if args.semantic_weight and args.text_embeddings is None:
        parser.error("--semantic-weight > 0 needs --text-embeddings")

    params = yaml.safe_load((ROOT / "conf" / "fb15k237" / "parameters_training.yml").read_text())["training"]
    model_config = {**params["model"], "conve_dropout": tuple(params["model"]["conve_dropout"])}
    config = TrainConfig(**params["fit"])
    config = replace(
        config,
        epochs=args.epochs or config.epochs,
        eval_every=args.eval_every or config.eval_every,
        checkpoint_every=args.eval_every or config.eval_every,
        device=args.device or config.device,
        batch_size=args.batch_size or config.batch_size,
        seed=config.seed if args.seed is None else args.seed,
        patience=config.patience if args.patience is None else args.patience,
        semantic_weight=(0.0 if args.text_embeddings is None else config.semantic_weight)
        if args.semantic_weight is None else args.semantic_weight,
        cuda_graphs=config.cuda_graphs if args.cuda_graphs is None else args.cuda_graphs,
        torch_compile=config.torch_compile if args.torch_compile is None else args.torch_compile,
    )
    parallel = init_from_env(config.resolve_device().type)  # under torchrun: join its process group
    main = parallel is None or parallel.is_main
    world_size = parallel.world_size if parallel is not None else 1
    say = print if main else (lambda *a, **k: None)  # rank 0 alone prints, validates and writes
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    indexed = index_kg({s: read_triples(args.data / f"{s}.txt") for s in SPLITS}, unseen_policy="keep")
    ids = {s: torch.from_numpy(a) for s, a in indexed.splits.items()}
    graph = build_graph(ids["train"], indexed.num_entities, indexed.num_relations)
    filter_index = FilterIndex.build(list(ids.values()), graph.num_entities, graph.num_relations)
    say(f"data: {indexed.num_entities} entities, {graph.num_edges} edges, {time.perf_counter() - t0:.1f} s", flush=True)

    text = None if args.text_embeddings is None else load_text_targets(args.text_embeddings, indexed.entities["label"].astype(str).tolist())
    if config.semantic_weight > 0:
        model_config["semantic_dim"] = text.dim
        say(f"semantic term: weight {config.semantic_weight}, {int(text.mask.sum())} entities with text, E {text.dim}", flush=True)
    torch.manual_seed(config.seed)
    model = RQGCN(graph.num_entities, graph.num_relations, **model_config)
    device = config.resolve_device()
    say(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}) x {world_size} processes, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters", flush=True)
    start = time.perf_counter()
    result = None

    checkpoint_seconds: list[float] = []

    def report(epoch: int, metrics: dict[str, float]) -> None:
        checkpoint_seconds.append(metrics.get("checkpoint_seconds", 0.0))
        if "valid_mrr" in metrics:
            say(f"  epoch {epoch}: loss {metrics['loss']:.4f} valid_mrr {metrics['valid_mrr']:.4f} "
                f"epoch {metrics['epoch_seconds']:.2f} s, elapsed {(time.perf_counter() - start) / 60:.1f} min", flush=True)

    step = -(-max(args.chunk_epochs, 1) // config.eval_every) * config.eval_every
    checkpoints = args.checkpoints or args.out / "checkpoints"
    done = max((epoch for epoch, _ in epoch_checkpoints(checkpoints)), default=0)  # a rerun resumes there
    for target in range(min(step * (done // step + 1), config.epochs), config.epochs + step, step):
        chunk = replace(config, epochs=min(target, config.epochs))
        result = fit(model, graph, ids["train"], ids["valid"], filter_index, chunk,
                     checkpoint_dir=checkpoints, progress=False, model_config=model_config,
                     text=text, on_epoch_end=report)
        over_time = time.perf_counter() - start > args.minutes * 60
        if parallel is not None:  # every process stops after the same chunk: rank 0's clock decides
            over_time = parallel.flag_from_main(over_time, torch.device("cuda", parallel.local_rank) if device.type == "cuda" else device)
        if result.stopped_early or over_time or result.last_epoch >= config.epochs:
            break
    fit_wall_seconds = time.perf_counter() - start  # this process's fit calls, compilation and checkpoints included
    if not main:
        torch.distributed.destroy_process_group()
        return

    history = pd.DataFrame(result.history)
    history.to_csv(args.out / "history.csv", index=False)
    artifact = model_artifact(model_config, graph.num_entities, graph.num_relations,
                              result.best_state_dict, dataset="FB15k-237", best_epoch=result.best_epoch,
                              best_valid_mrr=result.best_valid_mrr, train_seconds=result.train_seconds,
                              fit_config=config.to_dict())
    save_parts(artifact, args.out)
    model.load_state_dict(result.best_state_dict)
    model.eval()
    extracted = extract_codes(model, graph)
    (args.out / "code_statistics.json").write_text(json.dumps(extracted.statistics, indent=1))
    metrics = evaluate_splits(model, graph, extracted.codes.to(device), {"valid": ids["valid"], "test": ids["test"]},
                              filter_index.to(device), batch_size=config.eval_batch_size)
    (args.out / "link_prediction.json").write_text(json.dumps(metrics, indent=1))
    summary = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "processes": world_size,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "epochs": result.last_epoch,
        "best_epoch": result.best_epoch,
        "median_epoch_seconds": float(history["epoch_seconds"].median()),
        "median_eval_seconds": float(history["eval_seconds"].dropna().median()),
        "train_seconds": result.train_seconds,
        "validation_seconds": float(sum(h.get("eval_seconds", 0.0) for h in result.history)),
        "checkpoint_seconds_this_process": sum(checkpoint_seconds),
        "fit_wall_seconds_this_process": fit_wall_seconds,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "semantic_weight": config.semantic_weight,
        "codes_only_test_mrr": metrics["codes_only/test/mrr"],
        "continuous_test_mrr": metrics["continuous/test/mrr"],
        "shuffled_codes_test_mrr": metrics["shuffled_codes/test/mrr"],
        **{k: v for k, v in extracted.statistics.items() if k.startswith(("utilisation", "unique", "reconstruction"))},
    }
    if text is not None:  # how much of the texts' neighbourhoods the codes carry, with or without the term
        with torch.no_grad():
            vectors = model.entity_vectors_from_codes(extracted.codes.to(device).long()).float().cpu()  # [M, D]
        summary.update(neighbour_agreement(vectors, text.embeddings, text.mask))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    if parallel is not None:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
