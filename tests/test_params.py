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
