"""The seed-named code files: names, dtypes, shapes, round trip, and refusing stale codes."""

from __future__ import annotations

import json

import pytest
import torch

from rq_kg_pipeline.codes.entity_codes import (
    EntityCodes,
    check_codes_match,
    load_entity_codes,
    save_entity_codes,
    seed_file_stem,
    smallest_int_dtype,
    state_dict_sha256,
)


def bundle(num_quantizers: int, num_code: int = 300) -> EntityCodes:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, num_code, (7, 3, num_quantizers), generator=g)
    return EntityCodes(
        codes=codes,
        embeddings=torch.randn(7, 3, 5, generator=g),
        disambiguation=torch.zeros(7, dtype=torch.long),
        num_code=num_code,
        dataset="toy",
        meta={"checkpoint_sha256": "abc", "entities": [f"e{i}" for i in range(7)]},
    )


def test_seed_names_and_smallest_dtypes():
    assert seed_file_stem("FB15k-237", 16, 1024, 4) == "FB15k-237_16_1024_4_rq"
    assert seed_file_stem("FB15k-237", 16, 1024, 1) == "FB15k-237_16_1024"
    assert [smallest_int_dtype(k) for k in (2, 256, 257, 32768, 32769)] == [
        torch.uint8, torch.uint8, torch.int16, torch.int16, torch.int32
    ]


@pytest.mark.parametrize("num_quantizers", [1, 3])
def test_round_trip_with_the_seed_layout(tmp_path, num_quantizers):
    original = bundle(num_quantizers)
    codes_file = save_entity_codes(original, tmp_path)
    stem = seed_file_stem("toy", 3, 300, num_quantizers)
    assert codes_file == tmp_path / f"{stem}.pt"
    raw = torch.load(codes_file, weights_only=True)
    assert raw.dtype == torch.int16
    assert raw.shape == ((7, 3) if num_quantizers == 1 else (7, 3, num_quantizers))
    assert torch.load(tmp_path / f"{stem}_emd.pt", weights_only=True).shape == (7, 3, 5)
    sidecar = json.loads((tmp_path / f"{stem}.json").read_text())
    assert sidecar["codes_shape"] == list(raw.shape) and sidecar["entities"][0] == "e0"
    loaded = load_entity_codes(tmp_path)
    assert torch.equal(loaded.codes, original.codes) and torch.equal(loaded.embeddings, original.embeddings)
    assert loaded.meta["checkpoint_sha256"] == "abc" and loaded.stem == stem


def test_codes_of_other_weights_or_another_vocabulary_are_refused():
    weights = {"w": torch.ones(3)}
    codes = bundle(2)
    codes.meta["checkpoint_sha256"] = state_dict_sha256(weights)
    check_codes_match(codes, weights, codes.meta["entities"])
    with pytest.raises(ValueError, match="run the extraction pipeline again"):
        check_codes_match(codes, {"w": torch.zeros(3)})
    with pytest.raises(ValueError, match="another entity vocabulary"):
        check_codes_match(codes, entity_labels=list(reversed(codes.meta["entities"])))
