"""Typed parameters: Kedro validates each ``params:`` node input against these before any node runs.

Each model mirrors one block of ``conf/*/parameters_<pipeline>.yml``; unknown keys are
rejected (``extra="forbid"``) so a typo is an error that names the key, not a silent default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestionParams(_Params):
    """``ingestion:`` block. ``unseen_policy`` says what to do with valid/test triples that
    mention an entity or relation absent from training: stop (``error``), remove and count
    (``drop``), or give them ids as isolated nodes (``keep``, the FB15k-237 convention)."""

    unseen_policy: Literal["error", "drop", "keep"] = "error"
