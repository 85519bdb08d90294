"""Entity names (``id<TAB>name``, e.g. FB15k-237's entity2text.txt) checked against the vocabulary."""

from __future__ import annotations

import logging

import pandas as pd

from rq_kg_pipeline.kg.tsv import KGFormatError

log = logging.getLogger(__name__)


def select_names(names: pd.DataFrame, entities: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Names of the vocabulary's entities: DataFrame[id (entity label), name], one row per named entity.

    An id listed twice is an error naming both lines (which name is right cannot be guessed).
    Names of entities the KG does not contain are ignored and counted, as are entities without
    a name (prompts fall back to a readable id for them).
    """
    source = names.attrs.get("source", "<names>")
    repeated = names[names["id"].duplicated(keep=False)]
    if not repeated.empty:
        first = repeated.iloc[0]["id"]
        lines = repeated.loc[repeated["id"] == first, "line"].tolist()
        raise KGFormatError(source, int(lines[1]), f"id {first!r} already named on line {lines[0]}")
    known = names["id"].isin(entities["label"])
    selected = names.loc[known, ["id", "name"]].reset_index(drop=True)
    counts = {
        "names_unused": int((~known).sum()),
        "entities_without_name": int(len(entities) - known.sum()),
    }
    if len(names):
        log.info(
            "%s: names for %d of %d entities (%d names of other ids ignored)",
            source,
            len(selected),
            len(entities),
            counts["names_unused"],
        )
    return selected, counts
