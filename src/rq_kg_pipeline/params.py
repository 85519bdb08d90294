"""Typed parameters: Kedro validates each ``params:`` node input against these before any node runs.

Each model mirrors one block of ``conf/*/parameters_<pipeline>.yml``; unknown keys are
rejected (``extra="forbid"``) so a typo is an error that names the key, not a silent default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator, model_validator


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestionParams(_Params):
    """``ingestion:`` block. ``unseen_policy`` says what to do with valid/test triples that
    mention an entity or relation absent from training: stop (``error``), remove and count
    (``drop``), or give them ids as isolated nodes (``keep``, the FB15k-237 convention)."""

    unseen_policy: Literal["error", "drop", "keep"] = "error"


class ModelParams(_Params):
    """``training.model``: the RQGCN architecture (names follow the seed's arguments)."""

    init_dim: int = Field(100, ge=1)
    gcn_dim: int = Field(200, ge=2)
    gcn_layers: int = Field(2, ge=1)
    comp: Literal["mult", "sub", "corr"] = "mult"
    gcn_dropout: float = Field(0.1, ge=0, lt=1)
    activation: Literal["tanh", "relu", "gelu", "identity"] = "tanh"
    backend: Literal["native", "dgl"] = "native"
    seq_len: int = Field(16, ge=1)
    num_code: int = Field(1024, ge=2)
    num_quantizers: int | Literal["auto"] = "auto"
    beta: float = Field(0.25, ge=0)
    tf_layers: int = Field(1, ge=0)
    att_head: int = Field(4, ge=1)
    tf_dropout: float = Field(0.1, ge=0, lt=1)
    k_h: int | None = Field(None, ge=1)
    k_w: int | None = Field(None, ge=1)
    num_filters: int = Field(32, ge=1)
    kernel_size: int = Field(7, ge=1)
    conve_dropout: tuple[float, float, float] = (0.2, 0.3, 0.3)
    kmeans_init: bool = True
    revive_dead_codes: bool = True

    @field_validator("num_quantizers")
    @classmethod
    def _positive_quantizers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("num_quantizers must be >= 1 (1 is plain VQ) or 'auto'")
        return value

    @model_validator(mode="after")
    def _compatible_dims(self) -> ModelParams:
        if self.gcn_dim % self.att_head:
            raise ValueError(f"gcn_dim ({self.gcn_dim}) must be divisible by att_head ({self.att_head})")
        if (self.k_h is None) != (self.k_w is None):
            raise ValueError("k_h and k_w must be given together (or both left out to pick a shape)")
        if self.k_h is not None and self.k_h * self.k_w != self.gcn_dim:
            raise ValueError(f"k_h * k_w ({self.k_h} * {self.k_w}) must equal gcn_dim ({self.gcn_dim}) for ConvE")
        return self


def auto_num_quantizers(num_entities: int) -> int:
    """The seed's advice (2-3 levels for small KGs, 4-6 medium, 6-8 large) as entity-count thresholds."""
    for limit, levels in ((1_000, 2), (10_000, 3), (100_000, 4), (1_000_000, 6)):
        if num_entities < limit:
            return levels
    return 8


class ExtractionParams(_Params):
    """``extraction:`` block. ``disambiguate`` appends a TIGER-style index to colliding code
    sequences so every entity maps to exactly one sequence and back."""

    disambiguate: bool = True
    batch_size: int = Field(4096, ge=1)


class EvaluationParams(_Params):
    """``evaluation:`` block: ranking batch size (memory: batch_size x M scores) and control seed."""

    batch_size: int = Field(512, ge=1)
    seed: int = 0


Split = Literal["train", "valid", "test"]


class GenLLMDataParams(_Params):
    """``gen_llm_data:`` block. Train examples come from ``train_sources`` (the reference adds
    valid to train; test never); valid/test examples from their own split. Candidate lists are
    the model's filtered top-``candidates_k`` from codes; ``train_only_answerable`` keeps only
    train queries whose answer is among them (the reference's training data)."""

    candidates_k: int = Field(20, ge=1)
    num_answers: int = Field(3, ge=1)
    train_sources: list[Literal["train", "valid"]] = ["train"]
    negatives_per_positive: dict[Split, int] = {"train": 16, "valid": 1, "test": 1}
    max_examples: dict[Split, NonNegativeInt | None] = {"train": None, "valid": None, "test": None}
    without_codes_fraction: float = Field(0.0, ge=0, le=1)
    train_only_answerable: bool = False
    shuffle: bool = True
    seed: int = 0
    batch_size: int = Field(512, ge=1)
    mlflow_max_mb: float = Field(500.0, ge=0)

    @model_validator(mode="after")
    def _every_split(self) -> GenLLMDataParams:
        for name in ("negatives_per_positive", "max_examples"):
            missing = {"train", "valid", "test"} - set(getattr(self, name))
            if missing:
                raise ValueError(f"{name} needs a value for every split, missing {sorted(missing)}")
        if any(v < 1 for v in self.negatives_per_positive.values()):
            raise ValueError("negatives_per_positive must be >= 1 for every split")
        if "train" not in self.train_sources:
            raise ValueError("train_sources must include 'train'")
        return self


class CompareArm(_Params):
    """One arm of ``compare:``: the model settings it changes; unset ones come from
    ``training.model`` of the run's environment."""

    num_quantizers: int | Literal["auto"] | None = None

    def apply(self, model: ModelParams) -> ModelParams:
        return ModelParams(**{**model.model_dump(), **self.model_dump(exclude_none=True)})
