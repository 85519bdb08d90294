"""Checkpoints: weights-only round trip, digest detection of corruption, fallback, pruning, RNGs."""

from __future__ import annotations

import logging
import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from rq_kg_pipeline.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    epoch_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
    write_verified,
)


def payload(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "model": {"w": torch.full((4, 3), float(epoch))},
        "history": [{"loss": 1.0 / (e + 1)} for e in range(epoch)],
        "best_valid_mrr": float("-inf"),
        "stopped_early": False,
        "note": "plain values only",
        "rng": capture_rng_state(torch.Generator().manual_seed(epoch)),
    }


def test_round_trip_loads_weights_only(tmp_path) -> None:
    path = save_checkpoint(tmp_path, payload(3), epoch=3)
    assert verify_checkpoint(path) is None
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["note"] == "plain values only"
    assert torch.equal(loaded["model"]["w"], torch.full((4, 3), 3.0))
    assert loaded["history"] == payload(3)["history"]
    assert (tmp_path / (path.name + ".sha256")).read_text().split()[1] == path.name


def test_keeps_the_newest_two(tmp_path) -> None:
    for epoch in (1, 2, 3, 4):
        save_checkpoint(tmp_path, payload(epoch), epoch)
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".sha256") == [
        "checkpoint-epoch000003.pt.sha256",
        "checkpoint-epoch000004.pt.sha256",
    ]


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_digest"])
def test_corrupt_latest_is_reported_and_previous_used(tmp_path, caplog, damage) -> None:
    save_checkpoint(tmp_path, payload(1), 1)
    newest = save_checkpoint(tmp_path, payload(2), 2)
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        newest.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        (tmp_path / (newest.name + ".sha256")).unlink()
    with caplog.at_level(logging.WARNING):
        found = latest_checkpoint(tmp_path)
    assert found is not None and found.name == "checkpoint-epoch000001.pt"
    assert newest.name in caplog.text
    assert load_checkpoint(found)["epoch"] == 1
    with pytest.raises(CheckpointError, match=newest.name):
        load_checkpoint(newest)


def test_no_valid_checkpoint_gives_none(tmp_path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    path = save_checkpoint(tmp_path, payload(1), 1)
    path.write_bytes(b"")
    assert latest_checkpoint(tmp_path) is None


def test_unsafe_payload_is_refused_at_load(tmp_path) -> None:
    path = write_verified(tmp_path / "odd.pt", {"value": Fraction(1, 3)})  # not weights-only loadable
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_rng_states_round_trip(tmp_path) -> None:
    generator = torch.Generator().manual_seed(11)
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    path = write_verified(tmp_path / "rng.pt", {"rng": capture_rng_state(generator)})

    def draws() -> tuple:
        return (
            torch.rand(3).tolist(),
            torch.randperm(10, generator=generator).tolist(),
            random.random(),
            float(np.random.rand()),
        )

    expected = draws()
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    generator.manual_seed(99)
    restore_rng_state(load_checkpoint(path)["rng"], generator)
    assert draws() == expected


def test_newer_file_under_an_older_digest_is_detected(tmp_path, caplog) -> None:
    # A crash between renaming the new file into place and writing its digest leaves the old digest.
    save_checkpoint(tmp_path, payload(1), 1)
    newest = save_checkpoint(tmp_path, payload(2), 2)
    stale_digest = (tmp_path / (newest.name + ".sha256")).read_text()
    save_checkpoint(tmp_path, payload(3), 2)  # same epoch rewritten with other content
    (tmp_path / (newest.name + ".sha256")).write_text(stale_digest)
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path).name == "checkpoint-epoch000001.pt"
    assert f"checkpoint {newest} is corrupt or truncated" in caplog.text


def test_temporary_files_of_killed_writers_are_removed_at_the_next_save(tmp_path) -> None:
    leftovers = [
        tmp_path / ".checkpoint-epoch000003.pt.k2j4x9.tmp",
        tmp_path / ".checkpoint-epoch000003.pt.sha256.a81bq0.tmp",
        tmp_path / ".best.pt.zz81m2.tmp",
    ]
    unrelated = [tmp_path / ".notes.txt.abc.tmp", tmp_path / "checkpoint-epoch000003.pt.bak"]
    for path in leftovers + unrelated:
        path.write_bytes(b"partial")
    save_checkpoint(tmp_path, payload(4), 4)
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in unrelated)
    assert latest_checkpoint(tmp_path).name == "checkpoint-epoch000004.pt"
