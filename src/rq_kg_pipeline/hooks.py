"""Project hooks: readable MLflow parameters."""

from __future__ import annotations

import dataclasses
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node
from pydantic import BaseModel

MLFLOW_VALUE_LIMIT = 6000  # characters MLflow 3 accepts for one parameter value


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """``{"training.model.num_quantizers": "auto", ...}`` from nested dicts, pydantic models, dataclasses."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten(f"{prefix}.{key}", item))
        return flat
    return {prefix: str(value)[:MLFLOW_VALUE_LIMIT]}


class FlatMlflowParams:
    """kedro-mlflow logs a typed (pydantic/dataclass) parameter block as one opaque string; this
    also logs every leaf under its dotted key, once per run, when the first node reading it runs."""

    def __init__(self) -> None:
        self._logged: set[str] = set()

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._logged = set()

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        for name, value in inputs.items():
            if name.startswith("params:") and name not in self._logged:
                self._logged.add(name)
                mlflow.log_params(flatten(name.removeprefix("params:"), value))
