"""A Markdown dataset card for the generated instruction data: what it holds and how it was made."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rq_kg_pipeline.prompts.records import check_record_format
from rq_kg_pipeline.prompts.tokens import code_token, disambiguation_token

_FIELDS = {
    "prompt_completion": "`prompt`, `completion`",
    "messages": "`messages` (a user and an assistant chat turn)",
    "both": "`prompt`, `completion`, the same as chat `messages`",
}


def _format_description(num_codes: int, num_quantizers: int, seq_len: int, max_disambiguation: int) -> list[str]:
    """Markdown lines describing the code-token format."""
    last = num_codes - 1
    if num_quantizers == 1:
        lines = [f"- One token per position, `{code_token(1, 0, 1)}` .. `{code_token(1, last, 1)}` (plain VQ, Q = 1)."]
    else:
        lines = [
            f"- Code k of residual level q is `[C{{q}}_{{k}}]`, q = 1..{num_quantizers}, k = 0..{last} "
            f"(e.g. `{code_token(1, 5, num_quantizers)}` and `{code_token(2, 5, num_quantizers)}` "
            "are different tokens).",
            f"- Position-major order: position 1 levels 1..{num_quantizers}, then position 2, ... "
            f"up to position {seq_len}.",
        ]
    if max_disambiguation > 0:
        lines.append(
            f"- Some entities share a code sequence, so every entity ends with a disambiguation token "
            f"`{disambiguation_token(0)}` .. `{disambiguation_token(max_disambiguation)}` (0 for unique sequences)."
        )
    else:
        lines.append("- Every entity's code sequence is unique: no disambiguation token is used.")
    return lines


def dataset_card(
    *,
    title: str,
    counts: Mapping[str, Mapping[str, int]],
    num_codes: int,
    num_quantizers: int,
    seq_len: int,
    tokens_per_entity: int,
    vocabulary_size: int,
    max_disambiguation: int,
    checkpoint_sha256: str,
    parameters: Mapping[str, Any],
    example_entity: tuple[str, str] | None = None,
    code_stats: Mapping[str, Any] | None = None,
    record_format: str = "prompt_completion",
) -> str:
    """Markdown card: record counts per task and split, token format, tokens per entity, parameters, checkpoint hash.

    ``counts`` maps task -> split -> number of records; ``example_entity`` is (name, codes) to
    show one rendering; ``code_stats`` (from ``code_statistics``) adds the code-quality lines;
    ``record_format`` names the text fields (see :mod:`rq_kg_pipeline.prompts.records`).
    """
    check_record_format(record_format)
    if not counts:
        raise ValueError("counts must name at least one task")
    splits = sorted({split for per_split in counts.values() for split in per_split})
    header = "| task | " + " | ".join(splits) + " | total |"
    rule = "| --- | " + " | ".join("---:" for _ in splits) + " | ---: |"
    table = [header, rule]
    for task in sorted(counts):
        values = [int(counts[task].get(split, 0)) for split in splits]
        table.append(f"| {task} | " + " | ".join(f"{v:,}" for v in values) + f" | {sum(values):,} |")

    lines = [
        f"# {title}",
        "",
        "Instruction-tuning data in which knowledge-graph entities appear as learned residual-quantized "
        f"code tokens (JSON Lines, one record per line with {_FIELDS[record_format]}, `task` and metadata).",
        "",
        "## Records",
        "",
        *table,
        "",
        "## Token format",
        "",
        *_format_description(num_codes, num_quantizers, seq_len, max_disambiguation),
        f"- Tokens per entity: {tokens_per_entity} ({seq_len} positions x {num_quantizers} "
        + ("level" if num_quantizers == 1 else "levels")
        + (" + 1 disambiguation token)." if max_disambiguation > 0 else ")."),
        f"- New tokens to add to the LLM tokenizer: {vocabulary_size:,}.",
    ]
    if example_entity is not None:
        name, codes = example_entity
        lines += ["", f"Example: {json.dumps(name, ensure_ascii=False)} ->", "", "```", codes, "```"]
    if code_stats:
        lines += ["", "## Code quality", ""]
        for key in ("unique_code_rate", "num_collided_entities", "num_distinct_sequences"):
            if key in code_stats:
                lines.append(f"- {key}: {code_stats[key]}")
        for level in range(1, num_quantizers + 1):
            keys = [f"utilisation_l{level}", f"perplexity_l{level}", f"entropy_bits_l{level}"]
            if all(key in code_stats for key in keys):
                lines.append(
                    f"- level {level}: utilisation {float(code_stats[keys[0]]):.3f}, "
                    f"perplexity {float(code_stats[keys[1]]):.1f}, entropy {float(code_stats[keys[2]]):.2f} bits"
                )
    parameters_json = json.dumps(dict(parameters), indent=2, sort_keys=True, default=str)
    lines += ["", "## Parameters", "", "```json", parameters_json, "```"]
    lines += ["", "## Source", "", f"- Checkpoint SHA-256: `{checkpoint_sha256}`", ""]
    return "\n".join(lines)
