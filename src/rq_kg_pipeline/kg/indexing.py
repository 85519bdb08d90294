"""From validated string triples to id triples: vocabularies, unseen-entity policy, duplicates.

The policy for valid/test entities or relations that training never mentions is explicit:
``error`` (default) stops with the file and line of the first one; ``drop`` removes those
triples and counts them; ``keep`` gives them ids (isolated nodes in the training graph), as
the FB15k-237 benchmark does for its 36 entities that only valid/test mention.

Accepted and counted rather than refused: duplicate triples within a split (the first is kept,
``<split>_duplicates``) and self-loops ``(e, r, e)`` (kept, ``<split>_self_loops``). Relation
labels are names, never ids: relation ids are 0..R-1 in label order and the inverse of r is
r + R, so no label (``r_reverse``, ``inverse of r``, ``47``) can collide with an inverse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch

from rq_kg_pipeline.kg.tsv import TRIPLE_COLUMNS, KGFormatError
from rq_kg_pipeline.kg.vocab import build_vocab, to_ids

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
UnseenPolicy = Literal["error", "drop", "keep"]


@dataclass
class IndexedKG:
    """Vocabularies and id triples of all splits, plus what was counted on the way."""

    entities: pd.DataFrame  # [M] columns id, label
    relations: pd.DataFrame  # [R] columns id, label
    splits: dict[str, np.ndarray]  # split -> [N, 3] int64 (head, relation, tail)
    counts: dict[str, int] = field(default_factory=dict)  # duplicates / dropped per split

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)


def _first_unseen(frame: pd.DataFrame, seen_entities: set[str], seen_relations: set[str]) -> pd.Series:
    """Boolean mask of rows that mention an entity or relation training does not."""
    return (
        ~frame["head"].isin(seen_entities) | ~frame["tail"].isin(seen_entities) | ~frame["relation"].isin(seen_relations)
    )


def index_kg(raw: dict[str, pd.DataFrame], unseen_policy: UnseenPolicy = "error") -> IndexedKG:
    """Map the string triples of ``raw`` (split -> DataFrame[head, relation, tail, line]) to ids."""
    if set(raw) != set(SPLITS):
        raise ValueError(f"expected the splits {SPLITS}, got {sorted(raw)}")
    counts: dict[str, int] = {}
    frames: dict[str, pd.DataFrame] = {}
    for split in SPLITS:
        frame = raw[split]
        duplicated = frame.duplicated(subset=list(TRIPLE_COLUMNS), keep="first")
        counts[f"{split}_duplicates"] = int(duplicated.sum())
        if duplicated.any():
            log.warning("%s: %d duplicate triples removed (first occurrence kept)", _source(frame), duplicated.sum())
        frames[split] = frame[~duplicated]
        counts[f"{split}_self_loops"] = int((frames[split]["head"] == frames[split]["tail"]).sum())

    train = frames["train"]
    seen_entities = set(train["head"]) | set(train["tail"])
    seen_relations = set(train["relation"])
    for split in ("valid", "test"):
        frame = frames[split]
        unseen = _first_unseen(frame, seen_entities, seen_relations)
        counts[f"{split}_unseen"] = int(unseen.sum())
        if not unseen.any():
            continue
        row = frame[unseen].iloc[0]
        what = next(
            f"{kind} {row[col]!r}"
            for kind, col, seen in (
                ("entity", "head", seen_entities),
                ("relation", "relation", seen_relations),
                ("entity", "tail", seen_entities),
            )
            if row[col] not in seen
        )
        if unseen_policy == "error":
            raise KGFormatError(
                _source(frame),
                int(row["line"]),
                f"{what} does not occur in the training split ({int(unseen.sum())} such triples in this file); "
                "set ingestion.unseen_policy to 'drop' or 'keep' to accept them",
            )
        verb = "dropped" if unseen_policy == "drop" else "kept as isolated nodes"
        log.warning("%s: %d triples mention entities/relations absent from training, %s", _source(frame), unseen.sum(), verb)
        if unseen_policy == "drop":
            frames[split] = frame[~unseen]

    vocab_frames = list(frames.values()) if unseen_policy == "keep" else [train]
    entities = build_vocab(pd.concat([f[c] for f in vocab_frames for c in ("head", "tail")]))
    relations = build_vocab(pd.concat([f["relation"] for f in vocab_frames]))
    splits = {}
    for split, frame in frames.items():
        if frame.empty:
            raise KGFormatError(_source(frame), None, f"the {split} split has no triples left after the unseen policy")
        ids = np.stack(
            [to_ids(frame["head"], entities), to_ids(frame["relation"], relations), to_ids(frame["tail"], entities)],
            axis=1,
        )
        assert (ids >= 0).all(), "every label was checked against the vocabulary above"
        splits[split] = ids
    return IndexedKG(entities, relations, splits, counts)


def _source(frame: pd.DataFrame) -> str:
    return frame.attrs.get("source", "<triples>")


ID_COLUMNS = ["head", "relation", "tail"]


def id_triples(frame: pd.DataFrame) -> torch.Tensor:
    """[N, 3] int64 (head, relation, tail) from an id-triples table (the ``*_ids`` parquet files)."""
    return torch.tensor(frame[ID_COLUMNS].to_numpy(), dtype=torch.long)
