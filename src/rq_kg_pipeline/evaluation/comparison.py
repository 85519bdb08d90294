"""Side-by-side table of trained arms (VQ vs RQ, with and without the semantic term): quality of codes and cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

COLUMNS = {
    "num_quantizers": "Q",
    "semantic_weight": "semantic weight",
    "tokens_per_entity": "tokens / entity",
    "codes_only/test/mrr": "codes-only test MRR",
    "codes_only/test/hits@1": "H@1",
    "codes_only/test/hits@3": "H@3",
    "codes_only/test/hits@10": "H@10",
    "continuous/test/mrr": "continuous test MRR",
    "unique_code_rate": "unique-code rate",
    "mean_utilisation": "mean utilisation",
    "relative_reconstruction_error": "reconstruction MSE / latent power",
    "text_neighbour_agreement": "text-neighbour agreement",
    "train_seconds": "training s",
}


def comparison_row(
    link_prediction: Mapping[str, float],
    code_stats: Mapping[str, Any],
    train_seconds: float,
    fit_config: Mapping[str, Any] | None = None,
    text_alignment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One arm's numbers from its evaluation metrics, code statistics, fit settings (the semantic
    weight it trained with) and text alignment (NaN where there were no text embeddings)."""
    levels = int(code_stats["num_quantizers"])
    return {
        "num_quantizers": levels,
        "semantic_weight": float((fit_config or {}).get("semantic_weight", 0.0)),
        "tokens_per_entity": int(code_stats["seq_len"]) * levels,
        **{k: link_prediction[k] for k in COLUMNS if k in link_prediction},
        "unique_code_rate": code_stats["unique_code_rate"],
        "mean_utilisation": sum(code_stats[f"utilisation_l{q + 1}"] for q in range(levels)) / levels,
        # relative to the latents' mean square: arms have latents of different scales
        "relative_reconstruction_error": code_stats[f"reconstruction_mse_l{levels}"] / code_stats["latent_mean_square"],
        "text_neighbour_agreement": float((text_alignment or {}).get("text_neighbour_agreement", float("nan"))),
        "train_seconds": train_seconds,
    }


def comparison_table(rows: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Arms as rows, the measures of ``COLUMNS`` as columns (raw column names)."""
    return pd.DataFrame.from_dict(dict(rows), orient="index")[list(COLUMNS)].rename_axis("arm").reset_index()


def comparison_markdown(table: pd.DataFrame, title: str) -> str:
    """The table as Markdown with readable headers (tokens per entity excludes disambiguation;
    text-neighbour agreement: share of each entity's 10 nearest neighbours by code-decoded vector
    that are also among its 10 nearest by text embedding)."""
    shown = table.rename(columns=COLUMNS)
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = [
        "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    note = (
        "Same data, model and training budget; arms differ only in the number of quantizer levels (Q) and the "
        "weight of the semantic term. Text-neighbour agreement: share of each entity's 10 nearest neighbours by "
        "vectors decoded from its codes that are among its 10 nearest by text embedding (chance about 10 / entities)."
    )
    return "\n".join([f"# {title}", "", note, "", header, rule, *body, ""])
