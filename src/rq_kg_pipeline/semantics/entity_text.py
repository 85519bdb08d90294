"""The text each entity is embedded from: its name (plus its description when the names table
has one), or, for a KG without a names file, optionally its readable label.

Entities that a names file leaves unnamed get no text and ``has_text`` False: their target is a
zero vector that the semantic loss masks out. Embedding their identifiers instead (FB15k-237's
``/m/0abc``) would pull their codes towards the embedding of a meaningless string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from rq_kg_pipeline.prompts.names import fallback_entity_name

WithoutNames = Literal["skip", "labels"]


@dataclass(frozen=True)
class EntityTexts:
    """Texts of entity ids 0..M-1 (``""`` where there is none) and which ones have a text."""

    texts: list[str]  # [M]
    has_text: torch.Tensor  # [M] bool
    labels: list[str]  # [M] entity labels, the order every tensor follows
    source: str  # "names" (names file) or "labels" (readable labels, no names file)


def _description_column(names_table: pd.DataFrame) -> str | None:
    """A second text column of the names table (``description``), when there is one."""
    return "description" if "description" in names_table.columns else None


def entity_texts(entity_vocab: pd.DataFrame, names_table: pd.DataFrame, without_names: WithoutNames = "skip") -> EntityTexts | None:
    """Entity texts in id order from ``entity_vocab`` [id, label] and ``names_table`` [id (label), name(, description)].

    With an empty names table (the KG has no names file): ``None`` for ``without_names="skip"``;
    for ``"labels"`` every entity's readable label (``amino_acid`` -> ``amino acid``).
    """
    if without_names not in ("skip", "labels"):
        raise ValueError(f"without_names must be 'skip' or 'labels', got {without_names!r}")
    for frame, name, columns in ((entity_vocab, "entity_vocab", ("id", "label")), (names_table, "names_table", ("id", "name"))):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks the columns {missing}, has {list(frame.columns)}")
    vocab = entity_vocab.sort_values("id")
    if not (vocab["id"].to_numpy() == np.arange(len(vocab))).all():
        raise ValueError("entity_vocab ids must be exactly 0..M-1")
    labels = vocab["label"].astype(str).tolist()
    if names_table.empty:
        if without_names == "skip":
            return None
        texts = [fallback_entity_name(label) for label in labels]
        return EntityTexts(texts, torch.ones(len(labels), dtype=torch.bool), labels, "labels")
    if names_table["id"].duplicated().any():
        repeated = names_table.loc[names_table["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"names_table names the entity {repeated!r} more than once")
    described = _description_column(names_table)
    rows = names_table.set_index(names_table["id"].astype(str))
    texts: list[str] = []
    for label in labels:
        name = rows["name"].get(label)
        name = name.strip() if isinstance(name, str) else ""
        description = rows[described].get(label) if described else None
        description = description.strip() if isinstance(description, str) else ""
        texts.append(f"{name}: {description}" if name and description else name)
    has_text = torch.tensor([bool(t) for t in texts], dtype=torch.bool)
    return EntityTexts(texts, has_text, labels, "names")
