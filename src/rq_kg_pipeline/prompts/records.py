"""Pieces shared by the prompt builders: input checks, the escaped text of every entity and
relation, and the record layouts (``record_format``).

Record formats: ``prompt_completion`` (``prompt`` and ``completion`` strings: TRL's
prompt-completion type, trained on the completion only by default; what
``datasets.load_dataset("json", ...)`` and pandas read as columns), ``messages`` (one user and
one assistant chat turn: open-instruct, TRL's conversational type, chat-template trainers), or
``both`` (each prompt twice, as the first version of this pipeline wrote). Metadata fields follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rq_kg_pipeline.prompts.columns import Column, PieceTable, json_escaped, json_quoted
from rq_kg_pipeline.prompts.names import prompt_text

CODES_EXPLANATION = "Each entity is followed by its quantized representation, a sequence of code tokens."
RECORD_FORMATS = ("prompt_completion", "messages", "both")


def check_lookups(entity_names: Sequence[str], entity_codes: Sequence[str], relation_names: Sequence[str]) -> int:
    """Validate the per-entity and per-relation lookups; return R (relation_names holds 2R names)."""
    if len(entity_names) != len(entity_codes):
        raise ValueError(
            f"entity_names ({len(entity_names)}) and entity_codes ({len(entity_codes)}) must have one entry per entity"
        )
    if len(relation_names) == 0 or len(relation_names) % 2:
        raise ValueError(
            f"relation_names must hold 2R names (relations, then their inverses), got {len(relation_names)}"
        )
    return len(relation_names) // 2


def check_record_format(record_format: str) -> None:
    if record_format not in RECORD_FORMATS:
        raise ValueError(f"record_format must be one of {list(RECORD_FORMATS)}, got {record_format!r}")


def as_ids(values: torch.Tensor | Sequence[int], name: str, dims: int, upper: int, lower: int = 0) -> torch.Tensor:
    """``values`` as a CPU int64 tensor of ``dims`` dimensions with every id in [lower, upper)."""
    tensor = torch.as_tensor(values).detach().cpu()
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer ids, got {tensor.dtype}")
    if tensor.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimension(s), got shape {tuple(tensor.shape)}")
    tensor = tensor.long()
    if tensor.numel() and (int(tensor.min()) < lower or int(tensor.max()) >= upper):
        raise ValueError(f"{name} ids must lie in [{lower}, {upper}), found [{int(tensor.min())}, {int(tensor.max())}]")
    return tensor


def per_example_flags(value: bool | torch.Tensor | Sequence[bool], count: int, name: str) -> np.ndarray:
    """A bool per example [N] from one bool or a [N] bool sequence."""
    if isinstance(value, (bool, np.bool_)):
        return np.full(count, bool(value))
    flags = torch.as_tensor(value).reshape(-1).cpu().numpy().astype(bool)
    if len(flags) != count:
        raise ValueError(f"{name} must be a bool or hold one flag per example ({count}), got {len(flags)}")
    return flags


@dataclass(frozen=True)
class EntityPieces:
    """JSON-escaped text of every entity and relation as sections of a :class:`PieceTable`
    (each field is the id of a section's first piece; add the entity or relation id).

    Entity sections hold the with-codes variant at 0..M-1 and the names-only variant at
    M..2M-1 (the "w/o codes" examples), so ``id + M * without_codes`` picks one.
    """

    table: PieceTable
    num_entities: int  # M
    num_relations: int  # R
    mentions: list[str]  # [2M] escaped "name codes", then "name" (to derive more sections)
    mention: int  # [2M] the mentions
    answer: int  # [2M + 1] escaped "codes", then "name" (what a completion lists), then ""
    answer_codes: int  # [M] escaped codes
    quoted_name: int  # [M] original names as JSON strings (metadata)
    relation: int  # [2R] escaped relation names as prompts show them
    quoted_relation: int  # [2R] relation names as JSON strings (metadata)
    number: int  # [max(M, 2R)] decimal ids
    boolean: int  # [2] false, true

    @property
    def empty_answer(self) -> int:
        return self.answer + 2 * self.num_entities

    @classmethod
    def build(cls, entity_names: Sequence[str], entity_codes: Sequence[str], relation_names: Sequence[str]) -> EntityPieces:
        num_relations = check_lookups(entity_names, entity_codes, relation_names)
        codes = [json_escaped(text) for text in entity_codes]
        names = [json_escaped(prompt_text(name)) for name in entity_names]
        mentions = [f"{name} {code}" for name, code in zip(names, codes)] + names
        table = PieceTable()
        return cls(
            table=table,
            num_entities=len(entity_names),
            num_relations=num_relations,
            mentions=mentions,
            mention=table.section(mentions),
            answer=table.section(codes + names + [""]),
            answer_codes=table.section(codes),
            quoted_name=table.section([json_quoted(name) for name in entity_names]),
            relation=table.section([json_escaped(prompt_text(name)) for name in relation_names]),
            quoted_relation=table.section([json_quoted(name) for name in relation_names]),
            number=table.section([str(i) for i in range(max(len(entity_names), len(relation_names)))]),
            boolean=table.section(["false", "true"]),
        )


def record_columns(prompt: list[Column], completion: list[Column], meta: list[Column], record_format: str) -> list[Column]:
    """The pieces of one JSON line per record (newline included) around the escaped prompt and
    completion text and the metadata fields (``"task":...,...``), in ``record_format``'s layout."""
    chat = ['"messages":[{"role":"user","content":"', *prompt, '"},{"role":"assistant","content":"', *completion, '"}]']
    plain = ['"prompt":"', *prompt, '","completion":"', *completion, '"']
    if record_format == "prompt_completion":
        body = plain
    elif record_format == "messages":
        body = chat
    else:
        body = [*plain, ",", *chat]
    return ["{", *body, ",", *meta, "}\n"]
