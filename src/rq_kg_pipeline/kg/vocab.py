"""Deterministic vocabularies and id mapping: the same triples always give the same ids."""

from __future__ import annotations

import numpy as np
import pandas as pd


def build_vocab(labels: pd.Series) -> pd.DataFrame:
    """Vocabulary DataFrame[id, label], ids 0..n-1 assigned in sorted label order.

    Sorting (not first appearance) makes ids independent of line order in the input.
    """
    unique = sorted(set(labels.astype(str)))
    return pd.DataFrame({"id": np.arange(len(unique), dtype=np.int64), "label": unique})


def to_ids(labels: pd.Series, vocab: pd.DataFrame) -> np.ndarray:
    """Map labels to ids with ``vocab``; -1 for labels the vocabulary does not hold."""
    index = pd.Index(vocab["label"])
    return index.get_indexer(labels.astype(str)).astype(np.int64)
