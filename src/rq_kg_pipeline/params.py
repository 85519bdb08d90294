"""Typed parameters: the whole parameter tree is validated before any node runs.

Each model mirrors one block of ``conf/*/parameters_<pipeline>.yml``; :class:`ProjectParams`
is the whole tree, checked by :class:`ValidateParametersHook` when the Kedro context is created
(every block, whichever pipelines run), and Kedro checks each ``params:`` node input again. An
unknown key is an error naming it, the closest allowed key and every allowed key (a typo must
not become a silent default); bad values name the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from kedro.framework.hooks import hook_impl
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, field_validator, model_validator

from rq_kg_pipeline.models.conve import default_conve_shape
from rq_kg_pipeline.training.config import TrainConfig


def check_known_keys(value: Any, allowed: Iterable[str]) -> Any:
    """``value`` unchanged if it is not a mapping or has only ``allowed`` keys; else a ValueError
    naming the first unknown key, the closest allowed one, and all allowed keys."""
    if not isinstance(value, Mapping):
        return value
    allowed = sorted(allowed)
    unknown = [key for key in value if key not in allowed]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        more = f" (and {len(unknown) - 1} more unknown)" if len(unknown) > 1 else ""
        raise ValueError(f"unknown key {key!r}{hint}{more}; allowed keys: {', '.join(allowed)}")
    return value


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        return check_known_keys(value, cls.model_fields)


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
        k_h, k_w = (self.k_h, self.k_w) if self.k_h is not None else default_conve_shape(self.gcn_dim)
        if self.kernel_size > min(2 * k_h, k_w):
            raise ValueError(
                f"kernel_size ({self.kernel_size}) must be at most min(2*k_h, k_w) = {min(2 * k_h, k_w)} for the ConvE "
                f"image of k_h={k_h}, k_w={k_w}" + ("" if self.k_h is not None else f" (chosen for gcn_dim {self.gcn_dim})")
            )
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
    train queries whose answer is among them (the reference's training data). ``record_format``
    is the JSONL layout (see :mod:`rq_kg_pipeline.prompts.records`)."""

    candidates_k: int = Field(20, ge=1)
    num_answers: int = Field(3, ge=1)
    train_sources: list[Literal["train", "valid"]] = ["train"]
    negatives_per_positive: dict[Split, int] = {"train": 16, "valid": 1, "test": 1}
    max_examples: dict[Split, NonNegativeInt | None] = {"train": None, "valid": None, "test": None}
    without_codes_fraction: float = Field(0.0, ge=0, le=1)
    train_only_answerable: bool = False
    shuffle: bool = True
    seed: int = 0
    record_format: Literal["prompt_completion", "messages", "both"] = "prompt_completion"
    batch_size: int = Field(2048, ge=1)
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
    """One arm of ``compare:``: the model and fit settings it changes; unset ones come from
    ``training.model`` / ``training.fit`` of the run's environment."""

    num_quantizers: int | Literal["auto"] | None = None
    semantic_weight: float | None = Field(None, ge=0)

    def apply(self, model: ModelParams) -> ModelParams:
        return ModelParams(**{**model.model_dump(), **self.model_dump(exclude_none=True, exclude={"semantic_weight"})})

    def apply_fit(self, fit: TrainConfig) -> TrainConfig:
        return fit if self.semantic_weight is None else dataclasses.replace(fit, semantic_weight=self.semantic_weight)


class CompareParams(_Params):
    """``compare:`` block: the arms of ``kedro run --pipelines=compare`` (``rq_no_text``: ``rq``
    without the semantic term, the ablation of the text embeddings)."""

    vq: CompareArm = CompareArm(num_quantizers=1)
    rq: CompareArm = CompareArm()
    rq_no_text: CompareArm = CompareArm(semantic_weight=0.0)


class TextEmbeddingParams(_Params):
    """``training.text_embeddings``: the sentence model (``default``: the packaged all-MiniLM-L6-v2,
    or a local folder), texts per forward pass, its device, what a KG without a names file does
    (``skip``: no embeddings; ``labels``: embed the readable entity labels) and the cache folder."""

    model: str = Field("default", min_length=1)
    batch_size: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    without_names: Literal["skip", "labels"] = "skip"
    cache_dir: str = "data/05_model_input/text_embeddings_cache"


class DistributedParams(_Params):
    """``training.distributed``: ``nproc_per_node`` > 1 makes the training node start that many
    data-parallel workers on this host (one per GPU with ``device: cuda``, NCCL; gloo on CPU);
    the global batch stays ``training.fit.batch_size``, so the run trains the same model."""

    nproc_per_node: int = Field(1, ge=1)


class TrainingParams(_Params):
    """``training:`` block: the model, the fit settings (:class:`TrainConfig`), the checkpoint root,
    the entity text embeddings of the semantic loss, data-parallel workers."""

    model: ModelParams = ModelParams()
    fit: TrainConfig = TrainConfig()
    checkpoint_dir: str
    text_embeddings: TextEmbeddingParams = TextEmbeddingParams()
    distributed: DistributedParams = DistributedParams()

    @field_validator("fit", mode="before")
    @classmethod
    def _known_fit_keys(cls, value: Any) -> Any:
        return check_known_keys(value, [f.name for f in dataclasses.fields(TrainConfig)])


class ProjectParams(_Params):
    """Every parameter block of the project (``conf/<env>/parameters*.yml`` plus ``--params``)."""

    dataset_name: str
    ingestion: IngestionParams = IngestionParams()
    training: TrainingParams
    extraction: ExtractionParams = ExtractionParams()
    evaluation: EvaluationParams = EvaluationParams()
    gen_llm_data: GenLLMDataParams = GenLLMDataParams()
    compare: CompareParams = CompareParams()


class ParameterError(ValueError):
    """The parameters are invalid; the message lists every problem as ``dotted.key: what is wrong``."""


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "parameters"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = "" if error["type"] == "value_error" or isinstance(value, Mapping) else f" (got {value!r})"
    return f"{where}: {message}{shown}"


def validate_parameters(raw: Mapping[str, Any]) -> ProjectParams:
    """The whole parameter tree as :class:`ProjectParams`, or a :class:`ParameterError` naming each bad key."""
    try:
        return ProjectParams.model_validate(dict(raw))
    except ValidationError as error:
        problems = "\n".join(f"  {_describe(e)}" for e in error.errors(include_url=False))
        raise ParameterError(f"invalid parameters (conf/<env>/parameters*.yml, --params):\n{problems}") from None


class ValidateParametersHook:
    """Kedro hook: validate every parameter block when the context is created, before any
    catalog, MLflow run or node, whichever pipelines are asked for."""

    @hook_impl(tryfirst=True)  # before kedro-mlflow sets up tracking
    def after_context_created(self, context: Any) -> None:
        validate_parameters(context.config_loader["parameters"])
