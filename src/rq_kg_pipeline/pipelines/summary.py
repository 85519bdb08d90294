"""One human-readable line per pipeline stage, built from the outputs the stage just produced.

Each function takes what its stage wrote (plain dicts and tables, as the catalog holds them) and
the file it wrote them to, and returns e.g. ``evaluation: codes-only test MRR 0.342 ... -> path``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


def _pct(share: float) -> str:
    return f"{100 * share:.1f} %"


def ingestion_line(stats: Mapping[str, Any], where: str) -> str:
    """Sizes of the indexed KG."""
    triples = " / ".join(f"{int(stats[f'num_{s}_triples']):,}" for s in ("train", "valid", "test"))
    return (
        f"ingestion: {int(stats['num_entities']):,} entities, {int(stats['num_relations']):,} relations, "
        f"{triples} train/valid/test triples -> {where}"
    )


def training_line(artifact: Mapping[str, Any], where: str) -> str:
    """Model size, best validation MRR (from codes) and training time."""
    config, meta = artifact["model_config"], artifact.get("metadata", {})
    shape = f"Q {config['num_quantizers']}, K {config['num_code']}, L {config['seq_len']}"
    best = meta.get("best_valid_mrr")
    best_text = f"best valid MRR {best:.3f} (codes only) at epoch {meta.get('best_epoch')}" if best is not None else "trained"
    seconds = meta.get("train_seconds")
    time_text = f", {seconds:.0f} s of training" if seconds is not None else ""
    return f"training: {shape}: {best_text}{time_text} -> {where}"


def extraction_line(stats: Mapping[str, Any], where: str) -> str:
    """Code shape, unique-code rate and per-level utilisation."""
    levels = int(stats["num_quantizers"])
    usage = " / ".join(f"{100 * stats[f'utilisation_l{q}']:.0f}" for q in range(1, levels + 1))
    return (
        f"extraction: {int(stats['num_entities']):,} entities x {int(stats['seq_len'])} x {levels} codes "
        f"(K {int(stats['num_codes'])}), unique codes {_pct(stats['unique_code_rate'])}, "
        f"codebook use per level {usage} % -> {where}"
    )


def evaluation_line(report: Mapping[str, Any], where: str) -> str:
    """Codes-only test MRR and Hits@10 beside the continuous encoder and the shuffled-codes control."""
    m = report["metrics"]
    parts = [f"codes-only test MRR {m['codes_only/test/mrr']:.3f}, Hits@10 {m['codes_only/test/hits@10']:.3f}"]
    controls = [f"{label} {m[key]:.3f}" for label, key in (("continuous", "continuous/test/mrr"), ("shuffled codes", "shuffled_codes/test/mrr")) if key in m]
    if controls:
        parts.append(f"({', '.join(controls)})")
    return f"evaluation: {' '.join(parts)} -> {where}"


def gen_llm_data_line(counts: Mapping[str, int], where: str) -> str:
    """Records per task (all splits) from ``{"link_prediction_train": n, ...}``."""
    per_task: dict[str, int] = {}
    for key, n in counts.items():
        task = key.rsplit("_", 1)[0]
        per_task[task] = per_task.get(task, 0) + int(n)
    tasks = ", ".join(f"{n:,} {task.replace('_', '-')}" for task, n in per_task.items())
    return f"gen_llm_data: {tasks} records -> {where}"


def compare_line(table: pd.DataFrame, where: str) -> str:
    """Codes-only test MRR and unique-code rate per arm."""
    rows = table.set_index("arm") if "arm" in table.columns else table
    arms = "; ".join(
        f"{arm} (Q {int(row['num_quantizers'])}) MRR {row['codes_only/test/mrr']:.3f}, unique codes {_pct(row['unique_code_rate'])}"
        for arm, row in rows.iterrows()
    )
    return f"compare (codes-only test): {arms} -> {where}"


def cost_line(num_nodes: int, seconds: float, peak_rss_mb: float | None) -> str:
    """Nodes run, wall time and the process's peak resident memory."""
    memory = f", peak RSS {peak_rss_mb:,.0f} MB" if peak_rss_mb is not None else ""
    return f"run: {num_nodes} nodes in {seconds:,.1f} s{memory} (per node in MLflow: node_seconds.*, peak_rss_mb.*)"
