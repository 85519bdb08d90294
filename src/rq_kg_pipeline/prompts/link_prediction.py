"""Knowledge-graph-completion instruction examples in the SSQR reference's style.

The prompt gives the query (head, relation, ?) and the model's filtered top-k candidates,
each entity with its code tokens; the completion lists the codes of the top answers, the true
tail first, then the best candidates that are not the true tail. ``without_codes`` gives the
reference's "w/o codes" ablation (names only, in prompt and completion).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from rq_kg_pipeline.prompts.names import prompt_text
from rq_kg_pipeline.prompts.records import (
    CODES_EXPLANATION,
    as_ids,
    check_lookups,
    entity_mention,
    make_record,
    per_example_flags,
    relation_parts,
)

LINK_PREDICTION_TASK = "link_prediction"


def _prompt(head: str, relation: str, candidates: list[str], num_answers: int, with_codes: bool) -> str:
    """The user turn of one link-prediction example (every piece already a single line)."""
    what = "quantized representations" if with_codes else "names"
    lines = [
        "This is a knowledge graph completion task: predict the missing tail entity of an incomplete query triple.",
        *([CODES_EXPLANATION] if with_codes else []),
        f"Query: ({head}, {relation}, ?)",
        "Candidates:",
        *candidates,
        f"Give the {what} of the top-{num_answers} most likely answer entities, one per line, "
        "ranked from most to least likely.",
    ]
    return "\n".join(lines)


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
    chunk_size: int = 4096,
) -> Iterator[dict[str, Any]]:
    """Yield one record per query (heads/relations/targets [N], candidates [N, k] in model rank order).

    Candidate rows may end in -1 padding (fewer unfiltered entities than k); it is dropped.
    ``relations`` lie in [0, 2R) with r + R the inverse of r; ``relation_names`` holds their 2R
    names (see :func:`~rq_kg_pipeline.prompts.names.relation_display_names`); ``entity_codes``
    holds each entity's rendered code tokens. Record metadata: ``query`` {head, relation (base
    id in [0, R)), inverse}, ``answer`` (true tail id), ``answer_codes``, ``candidates`` (ids in
    shown order), ``answer_in_candidates``, ``with_codes`` and the original (uncleaned) ``names``.
    With ``only_answer_in_candidates`` queries whose candidates miss the true tail are skipped
    (the reference does this for training data).
    """
    num_entities = len(entity_names)
    num_relations = check_lookups(entity_names, entity_codes, relation_names)
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
    code_flags = [not flag for flag in per_example_flags(without_codes, count, "without_codes")]

    for start in range(0, count, chunk_size):
        stop = min(start + chunk_size, count)
        rows = zip(
            heads_t[start:stop].tolist(),
            relations_t[start:stop].tolist(),
            targets_t[start:stop].tolist(),
            candidates_t[start:stop].tolist(),
            code_flags[start:stop],
        )
        for head, relation, target, padded, with_codes in rows:
            shown = [entity for entity in padded if entity >= 0]
            answer_in_candidates = target in shown
            if only_answer_in_candidates and not answer_in_candidates:
                continue
            answers = [target] + [entity for entity in shown if entity != target][: num_answers - 1]
            base_relation, inverse = relation_parts(relation, num_relations)
            prompt = _prompt(
                entity_mention(entity_names[head], entity_codes[head], with_codes),
                prompt_text(relation_names[relation]),
                [entity_mention(entity_names[entity], entity_codes[entity], with_codes) for entity in shown],
                len(answers),
                with_codes,
            )
            answer_texts = [entity_codes[e] if with_codes else prompt_text(entity_names[e]) for e in answers]
            completion = "\n".join(f"{rank}. {text}" for rank, text in enumerate(answer_texts, start=1))
            yield make_record(
                prompt,
                completion,
                LINK_PREDICTION_TASK,
                query={"head": head, "relation": base_relation, "inverse": inverse},
                answer=target,
                answer_codes=entity_codes[target],
                candidates=shown,
                answer_in_candidates=answer_in_candidates,
                with_codes=with_codes,
                names={
                    "head": entity_names[head],
                    "relation": relation_names[relation],
                    "answer": entity_names[target],
                },
            )
