"""Typed parameters: what they accept, what they refuse, and derived choices."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rq_kg_pipeline.params import CompareArm, GenLLMDataParams, ModelParams, auto_num_quantizers


def test_auto_num_quantizers_follows_the_seed_advice():
    assert [auto_num_quantizers(m) for m in (135, 999, 1_000, 14_541, 100_000, 2_000_000)] == [2, 2, 3, 4, 6, 8]


def test_compare_arm_inherits_the_environment_model():
    fb = ModelParams(num_quantizers=4, gcn_dim=200, k_h=10, k_w=20)
    assert CompareArm().apply(fb).num_quantizers == 4
    vq = CompareArm(num_quantizers=1).apply(fb)
    assert vq.num_quantizers == 1 and vq.gcn_dim == 200


@pytest.mark.parametrize(
    "bad",
    [
        {"max_examples": {"train": -5, "valid": None, "test": None}},
        {"max_examples": {"train": None}},
        {"negatives_per_positive": {"train": 0, "valid": 1, "test": 1}},
        {"train_sources": ["valid"]},
        {"without_codes_fraction": 1.5},
        {"unknown_knob": 1},
    ],
)
def test_gen_llm_data_params_refuse_bad_values(bad):
    with pytest.raises(ValidationError):
        GenLLMDataParams(**bad)


# ---------- the whole parameter tree (what ValidateParametersHook checks before any node runs)

from kedro.config import OmegaConfigLoader  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from rq_kg_pipeline.params import ParameterError, check_known_keys, validate_parameters  # noqa: E402
from rq_kg_pipeline.settings import CONFIG_LOADER_ARGS  # noqa: E402
from rq_kg_pipeline.training.config import TrainConfig  # noqa: E402
from tests.conftest import PROJECT_ROOT  # noqa: E402


def project_parameters(env: str | None = None, *overrides: str) -> dict:
    """The merged parameters of conf/ for ``env`` with ``--params`` style overrides, as kedro builds them."""
    runtime = OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), env=env, runtime_params=runtime, **CONFIG_LOADER_ARGS)
    return loader["parameters"]


@pytest.mark.parametrize("env", [None, "fb15k237"])
def test_every_environment_parameter_file_is_valid(env):
    params = validate_parameters(project_parameters(env))
    assert isinstance(params.training.fit, TrainConfig)
    assert params.compare.vq.num_quantizers == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.model.num_quantiziers=2", "training.model: unknown key 'num_quantiziers' (did you mean 'num_quantizers'?); allowed keys: activation, att_head,"),
        ("training.fit.lrr=0.1", "training.fit: unknown key 'lrr' (did you mean 'lr'?); allowed keys: batch_size, bf16,"),
        ("trainig.fit.lr=0.1", "parameters: unknown key 'trainig' (did you mean 'training'?); allowed keys: compare, dataset_name,"),
        ("extraction.batchsize=8", "extraction: unknown key 'batchsize' (did you mean 'batch_size'?)"),
        ("compare.vqq.num_quantizers=1", "compare: unknown key 'vqq' (did you mean 'vq'?); allowed keys: rq, "),
        ("ingestion.unseen_policy=ignore", "ingestion.unseen_policy: Input should be 'error', 'drop' or 'keep' (got 'ignore')"),
        ("training.fit.device=tpu", "training.fit.device: Input should be 'auto', 'cpu' or 'cuda' (got 'tpu')"),
        ("training.fit.bf16=maybe", "training.fit.bf16: Input should be a valid boolean"),
        ("training.fit.batch_size=2.5", "training.fit.batch_size: Input should be a valid integer, got a number with a fractional part (got 2.5)"),
        ("training.fit.epochs=0", "training.fit: epochs must be >= 1, got 0"),
        ("training.fit.lr=-1", "training.fit: lr must be a positive finite number, got -1"),
        ("training.model.seq_len=0", "training.model.seq_len: Input should be greater than or equal to 1 (got 0)"),
        ("training.model.comp=add", "training.model.comp: Input should be 'mult', 'sub' or 'corr' (got 'add')"),
        ("training.model.att_head=3", "training.model: gcn_dim (64) must be divisible by att_head (3)"),
        ("training.model.k_h=4", "training.model: k_h and k_w must be given together"),
        ("training.model.kernel_size=9", "training.model: kernel_size (9) must be at most min(2*k_h, k_w) = 8 for the ConvE image of k_h=8, k_w=8 (chosen for gcn_dim 64)"),
        ("evaluation.batch_size=0", "evaluation.batch_size: Input should be greater than or equal to 1 (got 0)"),
    ],
)
def test_bad_parameters_name_the_key_and_what_is_allowed(override, message):
    with pytest.raises(ParameterError) as info:
        validate_parameters(project_parameters(None, override))
    assert message in str(info.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ParameterError) as info:
        validate_parameters(project_parameters(None, "training.fit.device=tpu", "ingestion.unseen_policy=x"))
    assert str(info.value).count("\n  ") == 2


def test_fb15k237_overrides_are_checked_against_their_own_dimensions():
    # FB15k-237's ConvE image is k_h x k_w = 10 x 20 (UMLS's 8 x 8): kernel 9 fits there, 21 does not
    assert validate_parameters(project_parameters("fb15k237", "training.model.kernel_size=9")).training.model.kernel_size == 9
    with pytest.raises(ParameterError, match=r"kernel_size \(21\) must be at most min\(2\*k_h, k_w\) = 20 for the ConvE image of k_h=10, k_w=20$"):
        validate_parameters(project_parameters("fb15k237", "training.model.kernel_size=21"))


def test_check_known_keys():
    assert check_known_keys({"a": 1}, ["a", "b"]) == {"a": 1}
    assert check_known_keys(5, ["a"]) == 5
    with pytest.raises(ValueError, match=r"unknown key 'zzz' \(and 1 more unknown\); allowed keys: a, b$"):
        check_known_keys({"zzz": 1, "yyy": 2}, ["b", "a"])
