"""Side-by-side table of trained arms (e.g. VQ vs RQ): quality of codes and cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

COLUMNS = {
    "num_quantizers": "Q",
    "tokens_per_entity": "tokens / entity",
    "codes_only/test/mrr": "codes-only test MRR",
    "codes_only/test/hits@1": "H@1",
    "codes_only/test/hits@3": "H@3",
    "codes_only/test/hits@10": "H@10",
    "continuous/test/mrr": "continuous test MRR",
    "unique_code_rate": "unique-code rate",
    "mean_utilisation": "mean utilisation",
    "relative_reconstruction_error": "reconstruction MSE / latent power",
    "train_seconds": "training s",
}


def comparison_row(link_prediction: Mapping[str, float], code_stats: Mapping[str, Any], train_seconds: float) -> dict[str, Any]:
    """One arm's numbers from its evaluation metrics and code statistics."""
    levels = int(code_stats["num_quantizers"])
    return {
        "num_quantizers": levels,
        "tokens_per_entity": int(code_stats["seq_len"]) * levels,
        **{k: link_prediction[k] for k in COLUMNS if k in link_prediction},
        "unique_code_rate": code_stats["unique_code_rate"],
        "mean_utilisation": sum(code_stats[f"utilisation_l{q + 1}"] for q in range(levels)) / levels,
        # relative to the latents' mean square: arms have latents of different scales
        "relative_reconstruction_error": code_stats[f"reconstruction_mse_l{levels}"] / code_stats["latent_mean_square"],
        "train_seconds": train_seconds,
    }


def comparison_table(rows: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Arms as rows, the measures of ``COLUMNS`` as columns (raw column names)."""
    return pd.DataFrame.from_dict(dict(rows), orient="index")[list(COLUMNS)].rename_axis("arm").reset_index()


def comparison_markdown(table: pd.DataFrame, title: str) -> str:
    """The table as Markdown with readable headers (tokens per entity excludes disambiguation)."""
    shown = table.rename(columns=COLUMNS)
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = [
        "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    return "\n".join([f"# {title}", "", "Same data, model and training budget; only the number of quantizer levels differs.", "", header, rule, *body, ""])
