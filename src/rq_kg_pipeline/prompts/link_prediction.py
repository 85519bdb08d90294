"""Knowledge-graph-completion instruction examples in the SSQR reference's style.

The prompt gives the query (head, relation, ?) and the model's filtered top-k candidates,
each entity with its code tokens; the completion lists the codes of the top answers, the true
tail first, then the best candidates that are not the true tail. ``without_codes`` gives the
reference's "w/o codes" ablation (names only, in prompt and completion). Records are rendered
column-wise (:mod:`rq_kg_pipeline.prompts.columns`): which entity goes where is decided for
all queries with array operations, text is gathered and joined per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from rq_kg_pipeline.prompts.columns import Chunk, Column, JSONLines, render_rows
from rq_kg_pipeline.prompts.records import (
    CODES_EXPLANATION,
    EntityPieces,
    as_ids,
    check_record_format,
    per_example_flags,
    record_columns,
)

LINK_PREDICTION_TASK = "link_prediction"
DEFAULT_CHUNK_SIZE = 2048  # records rendered at once: ~32 MB of text with FB15k-237's 25 entities x 65 tokens


def _header(with_codes: bool) -> str:
    """Escaped prompt text up to the query's head entity."""
    lines = [
        "This is a knowledge graph completion task: predict the missing tail entity of an incomplete query triple.",
        *([CODES_EXPLANATION] if with_codes else []),
        "Query: (",
    ]
    return "\\n".join(lines)


def _footer(num_answers: int, with_codes: bool) -> str:
    """Escaped prompt text after the candidate list."""
    what = "quantized representations" if with_codes else "names"
    return (
        f"\\nGive the {what} of the top-{num_answers} most likely answer entities, one per line, "
        "ranked from most to least likely."
    )


def _answers(targets: np.ndarray, shown: np.ndarray, num_answers: int) -> np.ndarray:
    """Answer ids [N, num_answers]: the target, then the first shown candidates [N, k] that are
    not it, -1 where fewer exist."""
    answers = np.full((len(targets), num_answers), -1, dtype=np.int64)
    answers[:, 0] = targets
    others = (shown >= 0) & (shown != targets[:, None])  # [N, k]
    order = np.cumsum(others, axis=1)  # [N, k] how many others up to here
    for j in range(1, num_answers):
        hit = others & (order == j)  # [N, k] at most one True per row
        found = hit.any(axis=1)
        answers[found, j] = shown[found, hit[found].argmax(axis=1)]
    return answers


def link_prediction_records(
    heads: torch.Tensor | Sequence[int],
    relations: torch.Tensor | Sequence[int],
    targets: torch.Tensor | Sequence[int],
    candidates: torch.Tensor,
    entity_names: Sequence[str],
    entity_codes: Sequence[str],
    relation_names: Sequence[str],
    *,
    num_answers: int = 3,
    without_codes: bool | torch.Tensor | Sequence[bool] = False,
    only_answer_in_candidates: bool = False,
    record_format: str = "prompt_completion",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> JSONLines:
    """One record per query (heads/relations/targets [N], candidates [N, k] in model rank order).

    Candidate rows may end in -1 padding (fewer unfiltered entities than k); it is dropped.
    ``relations`` lie in [0, 2R) with r + R the inverse of r; ``relation_names`` holds their 2R
    names (see :func:`~rq_kg_pipeline.prompts.names.relation_display_names`); ``entity_codes``
    holds each entity's rendered code tokens. Record metadata: ``task``, ``query`` {head,
    relation (base id in [0, R)), inverse}, ``answer`` (true tail id), ``answer_codes``,
    ``candidates`` (ids in shown order), ``answer_in_candidates``, ``with_codes`` and the
    original (uncleaned) ``names``. With ``only_answer_in_candidates`` queries whose candidates
    miss the true tail are skipped (the reference does this for training data).
    """
    pieces = EntityPieces.build(entity_names, entity_codes, relation_names)
    num_entities, num_relations = pieces.num_entities, pieces.num_relations
    heads_t = as_ids(heads, "heads", 1, num_entities)
    relations_t = as_ids(relations, "relations", 1, 2 * num_relations)
    targets_t = as_ids(targets, "targets", 1, num_entities)
    candidates_t = as_ids(candidates, "candidates", 2, num_entities, lower=-1)  # -1 pads short rows
    count = heads_t.shape[0]
    if relations_t.shape[0] != count or targets_t.shape[0] != count or candidates_t.shape[0] != count:
        raise ValueError(
            f"heads {tuple(heads_t.shape)}, relations {tuple(relations_t.shape)}, targets {tuple(targets_t.shape)} "
            f"and candidates {tuple(candidates_t.shape)} must have the same number of queries"
        )
    if candidates_t.shape[1] == 0:
        raise ValueError("candidates must hold at least one candidate per query")
    if num_answers < 1:
        raise ValueError(f"num_answers must be >= 1, got {num_answers}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    check_record_format(record_format)
    without = per_example_flags(without_codes, count, "without_codes")

    head, relation, target = heads_t.numpy(), relations_t.numpy(), targets_t.numpy()
    shown = candidates_t.numpy()
    shown = np.take_along_axis(shown, np.argsort(shown < 0, axis=1, kind="stable"), axis=1)  # padding last
    answer_in = (shown == target[:, None]).any(axis=1)  # [N]
    if only_answer_in_candidates:
        head, relation, target, shown, without, answer_in = (
            a[answer_in] for a in (head, relation, target, shown, without, answer_in)
        )
    answers = _answers(target, shown, num_answers)  # [N, num_answers]

    table = pieces.table
    candidate_line = table.section([f"\\n{text}" for text in pieces.mentions] + [""])  # [2M + 1], "" pads
    listed_id = table.section([str(i) for i in range(num_entities)] + [f",{i}" for i in range(num_entities)] + [""])
    answer_prefix = table.section(["", *(f"\\n{rank}. " for rank in range(2, num_answers + 1))])
    header = table.section([_header(True), _header(False)])
    footer = table.section([_footer(n, with_codes) for with_codes in (True, False) for n in range(1, num_answers + 1)])

    def render() -> Iterator[Chunk]:
        for start in range(0, len(head), chunk_size):
            part = slice(start, start + chunk_size)
            h, r, t, c, w, a = head[part], relation[part], target[part], shown[part], without[part], answers[part]
            shift = num_entities * w  # [n] names-only variant of entity text
            lines = np.where(c >= 0, candidate_line + c + shift[:, None], candidate_line + 2 * num_entities)  # [n, k]
            ids = np.where(c >= 0, listed_id + c + (np.arange(c.shape[1]) > 0) * num_entities, listed_id + 2 * num_entities)
            given = np.where(a >= 0, pieces.answer + a + shift[:, None], pieces.empty_answer)  # [n, num_answers]
            prompt = [
                header + w, pieces.mention + h + shift, ", ", pieces.relation + r, ", ?)\\nCandidates:",
                *lines.T, footer + (a >= 0).sum(axis=1) - 1 + num_answers * w,
            ]
            completion: list[Column] = ["1. ", given[:, 0]]
            for j in range(1, num_answers):
                completion += [answer_prefix + np.where(a[:, j] >= 0, j, 0), given[:, j]]
            meta = [
                f'"task":"{LINK_PREDICTION_TASK}","query":{{"head":', pieces.number + h,
                ',"relation":', pieces.number + r % num_relations, ',"inverse":', pieces.boolean + (r >= num_relations),
                '},"answer":', pieces.number + t, ',"answer_codes":"', pieces.answer_codes + t,
                '","candidates":[', *ids.T, '],"answer_in_candidates":', pieces.boolean + answer_in[part],
                ',"with_codes":', pieces.boolean + ~w, ',"names":{"head":', pieces.quoted_name + h,
                ',"relation":', pieces.quoted_relation + r, ',"answer":', pieces.quoted_name + t, "}",
            ]
            yield render_rows(table, record_columns(prompt, completion, meta, record_format), len(h))

    return JSONLines(render, len(head))
