"""Readable entity and relation names for prompts, and the one cleaning step prompts apply to them.

Names are data: they are kept as given (quotes, backslashes, non-ASCII intact) in record
metadata; only inside prompt text are control characters collapsed to spaces
(:func:`prompt_text`), so a name can never break a prompt's line layout.

Relation rule (Freebase paths): a label is split into its hops at ``./`` (CVT relations such
as ``/people/person/spouse_s./people/marriage/spouse``); each hop keeps its last two path
components (type and property; the domain is dropped), underscores become spaces, Freebase's
plural marker ``_s`` at the end of a component is dropped, a word repeated right after itself is
said once, and hops are joined with `` / ``. So ``/film/film/genre`` -> ``film genre`` and the
spouse relation -> ``person spouse / marriage spouse``. Other labels (UMLS ``interacts_with``)
just get spaces for underscores. The inverse of relation r is ``inverse of <name of r>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_PLURAL_MARKER = re.compile(r"_s$")


def prompt_text(text: str) -> str:
    """``text`` with each run of control characters (tabs, newlines, U+2028 ...) replaced by one space, ends trimmed."""
    return _CONTROL.sub(" ", text).strip()


def _words(text: str) -> str:
    """Underscores to spaces, whitespace runs to one space."""
    return " ".join(text.replace("_", " ").split())


def fallback_entity_name(label: str) -> str:
    """A readable name from an entity label: Freebase-style ids (``/m/0abc``) as they are, else ``a_b`` -> ``a b``."""
    if label.startswith("/"):
        return label
    readable = _words(label)
    return readable or label


def entity_display_names(entity_vocab: pd.DataFrame, names_table: pd.DataFrame) -> tuple[list[str], int]:
    """Display name of every entity id 0..M-1, and how many fell back to a readable label.

    ``entity_vocab`` is DataFrame[id, label]; ``names_table`` is DataFrame[id (entity label),
    name], possibly empty. A missing, empty or whitespace-only name falls back to the label.
    """
    required = ((entity_vocab, "entity_vocab", ("id", "label")), (names_table, "names_table", ("id", "name")))
    for frame, name, columns in required:
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks the columns {missing}, has {list(frame.columns)}")
    vocab = entity_vocab.sort_values("id")
    ids = vocab["id"].to_numpy()
    if not (ids == np.arange(len(ids))).all():
        raise ValueError("entity_vocab ids must be exactly 0..M-1")
    if names_table["id"].duplicated().any():
        repeated = names_table.loc[names_table["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"names_table names the entity {repeated!r} more than once")
    lookup = dict(zip(names_table["id"].astype(str), names_table["name"]))
    names: list[str] = []
    fallbacks = 0
    for label in vocab["label"].astype(str):
        name = lookup.get(label)
        if isinstance(name, str) and name.strip():
            names.append(name)
        else:
            names.append(fallback_entity_name(label))
            fallbacks += 1
    return names, fallbacks


def _hop_name(hop: str) -> str:
    """Readable name of one Freebase hop ``/domain/type/property`` (type and property, domain dropped)."""
    parts = [part for part in hop.split("/") if part]
    kept = [_words(_PLURAL_MARKER.sub("", part)) for part in parts[-2:]]
    words: list[str] = []
    for word in " ".join(kept).split():
        if not words or words[-1] != word:
            words.append(word)
    return " ".join(words)


def relation_display_name(label: str, inverse: bool = False) -> str:
    """Readable relation name (see the module docstring for the rule); ``inverse of ...`` when ``inverse``."""
    if label.startswith("/"):
        hops = [hop for hop in label.split("./") if hop.strip("/")]
        name = " / ".join(_hop_name(hop) for hop in hops)
    else:
        name = _words(label)
    name = name or label
    return f"inverse of {name}" if inverse else name


def relation_display_names(relation_labels: Sequence[str]) -> list[str]:
    """Names of relation ids 0..2R-1 for R labels: the R relations, then their inverses (id r + R)."""
    base = [relation_display_name(str(label)) for label in relation_labels]
    return base + [f"inverse of {name}" for name in base]
