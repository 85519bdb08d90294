"""Triple-classification examples: seeded negative sampling and True/False instruction records.

Negatives corrupt the head or the tail (50/50) of a positive with a random entity and are
redrawn until none is a known triple of any split (or the positive itself), so a "False"
label is never a fact the KG states. Records are rendered column-wise
(:mod:`rq_kg_pipeline.prompts.columns`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from rq_kg_pipeline.prompts.columns import Chunk, JSONLines, render_rows
from rq_kg_pipeline.prompts.records import (
    CODES_EXPLANATION,
    EntityPieces,
    as_ids,
    check_record_format,
    per_example_flags,
    record_columns,
)

TRIPLE_CLASSIFICATION_TASK = "triple_classification"
MAX_RESAMPLING_ROUNDS = 1000
DEFAULT_CHUNK_SIZE = 32768  # records rendered at once: ~50 MB of text with FB15k-237's 65 tokens per entity


def _triple_keys(triples: torch.Tensor, num_entities: int, num_relation_ids: int) -> torch.Tensor:
    """One int64 key per triple [N, 3] -> [N]: (head * num_relation_ids + relation) * num_entities + tail."""
    return (triples[:, 0] * num_relation_ids + triples[:, 1]) * num_entities + triples[:, 2]


def _is_known(keys: torch.Tensor, sorted_known: torch.Tensor) -> torch.Tensor:
    """[N] bool: which ``keys`` occur in the sorted unique key tensor ``sorted_known``."""
    if sorted_known.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    slots = torch.searchsorted(sorted_known, keys).clamp(max=sorted_known.numel() - 1)
    return sorted_known[slots] == keys


def sample_negatives(
    positives: torch.Tensor, known_triples: torch.Tensor, num_entities: int, ratio: int = 1, seed: int = 0
) -> torch.Tensor:
    """``ratio`` corrupted triples per positive, [N * ratio, 3] int64 (rows i*ratio .. come from positive i).

    Each draw picks head or tail with probability 1/2 and a uniform random entity; draws that
    are known triples (``known_triples`` [T, 3], all splits) or the positive are redrawn, for
    those rows only, until none is left. Deterministic for a ``seed``.
    """
    if num_entities < 2:
        raise ValueError(f"num_entities must be >= 2 to corrupt a triple, got {num_entities}")
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    positives_t = as_ids(positives, "positives", 2, 2**62)
    known_t = as_ids(known_triples, "known_triples", 2, 2**62)
    for name, tensor in (("positives", positives_t), ("known_triples", known_t)):
        if tensor.shape[1] != 3:
            raise ValueError(f"{name} must have shape [N, 3], got {tuple(tensor.shape)}")
        if tensor.numel() and int(tensor[:, [0, 2]].max()) >= num_entities:
            raise ValueError(f"{name} holds entity ids >= num_entities={num_entities}")
    all_triples = torch.cat([known_t, positives_t])  # [T + N, 3]
    num_relation_ids = int(all_triples[:, 1].max()) + 1 if all_triples.numel() else 1
    if num_entities * num_entities * num_relation_ids >= 2**62:
        raise ValueError(f"num_entities={num_entities} and {num_relation_ids} relation ids overflow int64 triple keys")
    sorted_known = torch.unique(_triple_keys(all_triples, num_entities, num_relation_ids))  # sorted

    generator = torch.Generator().manual_seed(seed)
    negatives = positives_t.repeat_interleave(ratio, dim=0)  # [N * ratio, 3]
    originals = negatives.clone()
    pending = torch.arange(negatives.shape[0])  # rows still to (re)draw
    for _ in range(MAX_RESAMPLING_ROUNDS):
        if pending.numel() == 0:
            return negatives
        draws = originals[pending]  # [P, 3]
        corrupt_head = torch.rand(pending.numel(), generator=generator) < 0.5  # [P]
        entities = torch.randint(0, num_entities, (pending.numel(),), generator=generator)  # [P]
        draws[:, 0] = torch.where(corrupt_head, entities, draws[:, 0])
        draws[:, 2] = torch.where(corrupt_head, draws[:, 2], entities)
        negatives[pending] = draws
        pending = pending[_is_known(_triple_keys(draws, num_entities, num_relation_ids), sorted_known)]
    raise ValueError(
        f"{pending.numel()} negatives were still known triples after {MAX_RESAMPLING_ROUNDS} rounds "
        f"(e.g. for positive {originals[pending[0]].tolist()}); the KG is too dense to corrupt them"
    )


def triple_classification_records(
    triples: torch.Tensor,
    labels: bool | torch.Tensor | Sequence[bool],
    entity_names: Sequence[str],
    entity_codes: Sequence[str],
    relation_names: Sequence[str],
    *,
    without_codes: bool | torch.Tensor | Sequence[bool] = False,
    record_format: str = "prompt_completion",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> JSONLines:
    """One True/False record per triple [N, 3] (relation ids in [0, 2R), ``relation_names`` 2R names).

    ``labels`` is one bool for all triples or [N] bools. Metadata: ``task``, ``triple`` [h, r, t]
    as given, ``label``, ``inverse``, ``with_codes`` and the original (uncleaned) ``names``.
    """
    pieces = EntityPieces.build(entity_names, entity_codes, relation_names)
    num_entities, num_relations = pieces.num_entities, pieces.num_relations
    triples_t = as_ids(triples, "triples", 2, max(num_entities, 2 * num_relations))
    if triples_t.shape[1] != 3:
        raise ValueError(f"triples must have shape [N, 3], got {tuple(triples_t.shape)}")
    count = triples_t.shape[0]
    if count and (int(triples_t[:, [0, 2]].max()) >= num_entities or int(triples_t[:, 1].max()) >= 2 * num_relations):
        raise ValueError(f"triples hold entity ids >= {num_entities} or relation ids >= {2 * num_relations}")
    label = per_example_flags(labels, count, "labels")
    without = per_example_flags(without_codes, count, "without_codes")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    check_record_format(record_format)
    head, relation, tail = (column.numpy() for column in triples_t.unbind(dim=1))
    table = pieces.table
    intro = "Given a triple from a knowledge graph, decide whether it is true.\\n"
    header = table.section([f"{intro}{CODES_EXPLANATION}\\nTriple: (", f"{intro}Triple: ("])
    answer = table.section(["False", "True"])

    def render() -> Iterator[Chunk]:
        for start in range(0, count, chunk_size):
            part = slice(start, start + chunk_size)
            h, r, t, w, y = head[part], relation[part], tail[part], without[part], label[part]
            shift = num_entities * w  # [n] names-only variant of entity text
            prompt = [
                header + w, pieces.mention + h + shift, ", ", pieces.relation + r, ", ",
                pieces.mention + t + shift, ")\\nAnswer True or False.",
            ]
            meta = [
                f'"task":"{TRIPLE_CLASSIFICATION_TASK}","triple":[', pieces.number + h, ",", pieces.number + r, ",",
                pieces.number + t, '],"label":', pieces.boolean + y, ',"inverse":', pieces.boolean + (r >= num_relations),
                ',"with_codes":', pieces.boolean + ~w, ',"names":{"head":', pieces.quoted_name + h,
                ',"relation":', pieces.quoted_relation + r, ',"tail":', pieces.quoted_name + t, "}",
            ]
            yield render_rows(table, record_columns(prompt, [answer + y], meta, record_format), len(h))

    return JSONLines(render, count)
