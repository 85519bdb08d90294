"""Prompt generation on FB15k-237: every link-prediction query (both directions, all splits)
plus triple classification at the configured ratio, written as JSONL (issue 6: <= 60 s on 2
cores, peak RSS <= 4 GB).

Two stages, timed apart and each run in a fresh process, so each peak RSS is its own:

- ranking: codes-only filtered top-k candidates of every distinct (entity, relation) query
  (model inference; the pipeline's ``rank_candidates`` node);
- writing: entity text, then the six JSONL files from those candidates (the nodes tagged
  ``prompt_writing``: ``kedro run --pipelines=gen_llm_data --tags=prompt_writing``).

Loading (TSVs, model, codes) is reported but not timed in either stage. Parameters come from
conf/base (+ conf/fb15k237) parameters_gen_llm_data.yml, as ``kedro run --env fb15k237``.

    python benchmarks/bench_prompts.py [../shared/data/FB15k-237] --repeats 1
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import DEFAULT_DATA, print_table  # noqa: E402
from rq_kg_pipeline.codes.entity_codes import check_codes_match, load_entity_codes  # noqa: E402
from rq_kg_pipeline.evaluation.candidates import split_candidates  # noqa: E402
from rq_kg_pipeline.evaluation.conve_shared import shared_part_score_fn  # noqa: E402
from rq_kg_pipeline.evaluation.ranking import FilterIndex, both_direction_queries  # noqa: E402
from rq_kg_pipeline.kg.graph import build_graph  # noqa: E402
from rq_kg_pipeline.kg.indexing import SPLITS, index_kg  # noqa: E402
from rq_kg_pipeline.kg.names import select_names  # noqa: E402
from rq_kg_pipeline.kg.tsv import read_names, read_triples  # noqa: E402
from rq_kg_pipeline.models.persistence import load_model  # noqa: E402
from rq_kg_pipeline.params import GenLLMDataParams  # noqa: E402
from rq_kg_pipeline.prompts.examples import EntityText, link_prediction_examples, triple_classification_examples  # noqa: E402
from rq_kg_pipeline.prompts.jsonl import write_jsonl  # noqa: E402
from rq_kg_pipeline.prompts.names import entity_display_names, relation_display_names  # noqa: E402
from rq_kg_pipeline.prompts.tokens import render_entity_codes  # noqa: E402


def load_params(env: str) -> GenLLMDataParams:
    """gen_llm_data parameters of conf/base, overridden by conf/<env> where it has the file."""
    merged: dict[str, Any] = {}
    for folder in ("base", env):
        path = ROOT / "conf" / folder / "parameters_gen_llm_data.yml"
        if path.is_file():
            merged.update(yaml.safe_load(path.read_text())["gen_llm_data"])
    return GenLLMDataParams(**merged)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports KiB


def load_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Triples, names, codes (checked against the entity order) and the model artifact."""
    indexed = index_kg({s: read_triples(args.data / f"{s}.txt") for s in SPLITS}, unseen_policy="keep")
    names_file = args.data / "entity2text.txt"
    raw_names = read_names(names_file) if names_file.is_file() else None
    names = select_names(raw_names, indexed.entities)[0] if raw_names is not None else None
    codes = load_entity_codes(args.codes)
    check_codes_match(codes, entity_labels=indexed.entities.sort_values("id")["label"].tolist())
    return {"indexed": indexed, "names": names, "codes": codes}


def split_triples(indexed: Any, params: GenLLMDataParams) -> dict[str, torch.Tensor]:
    """Positive triples per output split, as the pipeline's nodes choose them."""
    ids = {s: torch.from_numpy(a) for s, a in indexed.splits.items()}
    train = torch.cat([ids["train"], ids["valid"]]) if "valid" in params.train_sources else ids["train"]
    return {"train": train, "valid": ids["valid"], "test": ids["test"]}


def rank_stage(args: argparse.Namespace, params: GenLLMDataParams) -> dict[str, Any]:
    """Load, then time the candidate ranking of every split; save the candidates for the writers."""
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    inputs = load_inputs(args)
    indexed = inputs["indexed"]
    checkpoint = torch.load(args.model, weights_only=True)
    check_codes_match(inputs["codes"], checkpoint["state_dict"])
    model = load_model(checkpoint, device="cpu")
    ids = {s: torch.from_numpy(a) for s, a in indexed.splits.items()}
    graph = build_graph(ids["train"], indexed.num_entities, indexed.num_relations)
    loaded = time.perf_counter()
    cpu = time.process_time()
    splits = split_triples(indexed, params)
    train_filter = FilterIndex.build([splits["train"]], graph.num_entities, graph.num_relations)
    full_filter = FilterIndex.build(list(ids.values()), graph.num_entities, graph.num_relations)
    score_fn = shared_part_score_fn(model, graph, inputs["codes"].codes)
    k = min(params.candidates_k, graph.num_entities)
    candidates = split_candidates(score_fn, splits, train_filter, full_filter, k, params.batch_size)
    seconds, cpu_seconds = time.perf_counter() - loaded, time.process_time() - cpu
    torch.save({s: top.int() for s, top in candidates.items()}, args.out / "link_prediction_candidates.pt")
    coverage = {
        s: float((top == both_direction_queries(splits[s], graph.num_relations)[2].unsqueeze(1)).any(dim=1).float().mean())
        for s, top in candidates.items()
    }
    return {
        "load_s": loaded - started, "seconds": seconds, "cpu_s": cpu_seconds, "peak_gb": peak_rss_gb(),
        "queries": sum(len(top) for top in candidates.values()), "coverage": coverage,
    }


def write_stage(args: argparse.Namespace, params: GenLLMDataParams) -> dict[str, Any]:
    """Load, then time entity text and the six JSONL files from the saved candidates."""
    started = time.perf_counter()
    inputs = load_inputs(args)
    indexed, codes = inputs["indexed"], inputs["codes"]
    candidates = torch.load(args.out / "link_prediction_candidates.pt", weights_only=True)
    loaded = time.perf_counter()
    cpu = time.process_time()
    names_table = inputs["names"] if inputs["names"] is not None else indexed.entities.iloc[:0].rename(columns={"label": "name"})
    names, _ = entity_display_names(indexed.entities, names_table[["id", "name"]])
    text = EntityText(
        names,
        render_entity_codes(codes.codes, codes.disambiguation),
        relation_display_names(indexed.relations.sort_values("id")["label"].tolist()),
    )
    files: dict[str, tuple[float, int, int]] = {}
    splits = split_triples(indexed, params)
    known = torch.cat([torch.from_numpy(a) for a in indexed.splits.values()])
    for index, split in enumerate(SPLITS):
        common = {
            "shuffle": params.shuffle, "max_examples": params.max_examples[split],
            "without_codes_fraction": params.without_codes_fraction if split == "train" else 0.0,
            "record_format": params.record_format,
        }
        jobs = {
            f"link_prediction_{split}": lambda: link_prediction_examples(
                text, both_direction_queries(splits[split], indexed.num_relations), candidates[split],
                num_answers=params.num_answers, seed=params.seed,
                only_answer_in_candidates=params.train_only_answerable and split == "train", **common,
            ),
            f"triple_classification_{split}": lambda: triple_classification_examples(
                text, splits[split], known, negatives_per_positive=params.negatives_per_positive[split],
                seed=params.seed + index, **common,
            ),
        }
        for name, build in jobs.items():
            begun = time.perf_counter()
            path = args.out / f"{name}.jsonl"
            records = write_jsonl(build(), path)
            files[name] = (time.perf_counter() - begun, records, path.stat().st_size)
    return {
        "load_s": loaded - started, "seconds": time.perf_counter() - loaded, "cpu_s": time.process_time() - cpu,
        "peak_gb": peak_rss_gb(), "files": files,
    }


def in_fresh_process(stage: Any, args: argparse.Namespace, params: GenLLMDataParams) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(stage, (args, params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA, help="FB15k-237 folder (train/valid/test.txt, entity2text.txt)")
    parser.add_argument("--model", type=Path, default=ROOT / "data/06_models/FB15k-237/rqgcn.pt")
    parser.add_argument("--codes", type=Path, default=ROOT / "data/07_model_output/FB15k-237/codes")
    parser.add_argument("--env", default="fb15k237", help="conf/<env> overrides of parameters_gen_llm_data.yml")
    parser.add_argument("--out", type=Path, default=None, help="where the JSONL files go (default: a temporary folder, removed)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for ranking")
    parser.add_argument("--batch-size", type=int, default=None, help="distinct queries scored at once (default: the parameter file's)")
    parser.add_argument("--thp", action="store_true",
                        help="THP_MEM_ALLOC_ENABLE=1 for the stages: torch backs large tensors with huge pages (Linux)")
    parser.add_argument("--keep", action="store_true", help="keep the JSONL files")
    parser.add_argument("--stages", default="ranking,writing",
                        help="ranking, writing or both; writing alone reads --out/link_prediction_candidates.pt")
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    if not stages or stages - {"ranking", "writing"}:
        parser.error(f"--stages takes ranking and/or writing, got {args.stages!r}")
    if stages == {"writing"} and (args.out is None or not (args.out / "link_prediction_candidates.pt").is_file()):
        parser.error("--stages writing needs --out holding link_prediction_candidates.pt from a ranking run")
    params = load_params(args.env)
    if args.thp:
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # read by torch's CPU allocator in the spawned stage processes
    if args.batch_size is not None:
        params = params.model_copy(update={"batch_size": args.batch_size})
    temporary = args.out is None
    args.out = Path(tempfile.mkdtemp(prefix="bench_prompts_")) if temporary else args.out
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"gen_llm_data on {args.data.name}: record_format {params.record_format}, candidates_k {params.candidates_k}, "
          f"negatives/positive {params.negatives_per_positive}, batch {params.batch_size}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}; output {args.out}")
    runs: dict[str, list[dict[str, Any]]] = {"ranking": [], "writing": []}
    try:
        for _ in range(args.repeats):
            for stage, run in (("ranking", rank_stage), ("writing", write_stage)):
                if stage in stages:
                    runs[stage].append(in_fresh_process(run, args, params))
                    if stage == "writing" and not (args.keep or temporary):
                        for name in runs[stage][-1]["files"]:
                            (args.out / f"{name}.jsonl").unlink()
    finally:
        if temporary and not args.keep:
            shutil.rmtree(args.out, ignore_errors=True)
    rank, write = runs["ranking"], runs["writing"]
    rows = []
    if rank:
        rows.append((f"ranking ({rank[0]['queries']:,} queries)", [r["seconds"] for r in rank],
                     f"peak RSS {max(r['peak_gb'] for r in rank):.2f} GB; CPU {statistics.median([r['cpu_s'] for r in rank]):.0f} s"))
    if write:
        rows.append(("writing (entity text + 6 JSONL files)", [w["seconds"] for w in write],
                     f"peak RSS {max(w['peak_gb'] for w in write):.2f} GB; CPU {statistics.median([w['cpu_s'] for w in write]):.0f} s"))
    if rank and write:
        rows.append(("ranking + writing", [r["seconds"] + w["seconds"] for r, w in zip(rank, write)], ""))
    rows.append(("loading (each stage, not in the above)", [r["load_s"] for r in rank + write], ""))
    print_table(rows, f"Prompt generation, {args.data.name}, CPU {args.threads} threads, {args.repeats} run(s)")
    if rank:
        print("answer among the candidates: " + ", ".join(f"{s} {100 * c:.1f} %" for s, c in rank[0]["coverage"].items()))
    if not write:
        return
    print("\n| file | records | GB | median s | MB/s |\n| --- | ---: | ---: | ---: | ---: |")
    for name in write[0]["files"]:
        seconds = statistics.median([w["files"][name][0] for w in write])
        _, records, size = write[0]["files"][name]
        print(f"| {name}.jsonl | {records:,} | {size / 1e9:.2f} | {seconds:.1f} | {size / 1e6 / seconds:.0f} |")
    records = sum(v[1] for v in write[0]["files"].values())
    size = sum(v[2] for v in write[0]["files"].values())
    print(f"| all | {records:,} | {size / 1e9:.2f} | | |")


if __name__ == "__main__":
    main()
