"""Training survives SIGKILL: mid-epoch, mid-checkpoint-write, and a corrupt newest checkpoint.

A real training run (``tests/reliability/train_driver.py``, the plain library on UMLS, CPU) runs
in a subprocess and is killed twice; rerunning the same command each time must resume from the
last complete checkpoint and end with codes identical (``torch.equal``) to an uninterrupted run.

How each kill lands where it should:
- mid-epoch: the driver pauses inside training step 3 of epoch 3 (a forward pre-hook prints
  ``PAUSED`` and sleeps); the test then sends SIGKILL.
- mid-checkpoint-write: after epoch 4 the driver lowers its own file-size limit (RLIMIT_FSIZE) to
  half a checkpoint with SIGXFSZ at its default action, so the kernel kills it in the middle of
  writing epoch 5's checkpoint: the partial temporary file of exactly that size is on disk, and no
  Python cleanup ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rq_kg_pipeline.training.checkpoint import checkpoint_name, epoch_checkpoints, verify_checkpoint
from rq_kg_pipeline.training.queries import TrainQueries
from tests.conftest import PROJECT_ROOT
from tests.reliability.train_driver import CONFIG


def driver_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.reliability.train_driver", str(out), *extra]


def run_to_end(out: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        driver_command(out, *extra), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env=_env()
    )
    return done


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def kill_when_paused(out: Path, step: int) -> str:
    """Start the driver, wait for it to pause at ``step``, SIGKILL it; returns its stdout."""
    process = subprocess.Popen(
        driver_command(out, "--pause-at-step", str(step)),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    lines: list[str] = []
    deadline = time.monotonic() + 300
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.startswith("PAUSED"):
            break
        assert time.monotonic() < deadline, "driver never reached the pause"
    else:
        pytest.fail(f"driver ended before pausing: {''.join(lines)}")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    return "".join(lines)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    done = run_to_end(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out / "codes.pt", weights_only=True)


def test_sigkill_mid_epoch_and_mid_checkpoint_write_then_resume_gives_identical_codes(umls, tmp_path, reference) -> None:
    directory = tmp_path / "checkpoints"
    steps = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations).num_batches(CONFIG.batch_size)
    assert steps >= 4

    # 1. SIGKILL inside epoch 3 (at step 3): epochs 1 and 2 are checkpointed, epoch 3 is lost.
    stdout = kill_when_paused(tmp_path, step=2 * steps + 3)
    assert "EPOCH 2 done" in stdout and "EPOCH 3 done" not in stdout
    assert [e for e, _ in epoch_checkpoints(directory)] == [1, 2]

    # 2. Same command: resumes from epoch 2, then dies (SIGXFSZ) while writing epoch 5's checkpoint.
    killed = run_to_end(tmp_path, "--fsize-limit-after-epoch", "4")
    assert killed.returncode == -signal.SIGXFSZ, killed.stderr[-3000:]
    assert f"resumed from {directory / checkpoint_name(2)} (epoch 2)" in killed.stderr
    assert "EPOCH 3 done" in killed.stdout and "EPOCH 4 done" in killed.stdout and "EPOCH 5 done" not in killed.stdout
    limit = int(killed.stdout.split("FSIZE limit ")[1].split()[0])
    partial = [p for p in directory.iterdir() if p.name.startswith(f".{checkpoint_name(5)}.")]
    assert len(partial) == 1 and partial[0].stat().st_size == limit, "the kill must land mid-write"
    assert not (directory / checkpoint_name(5)).exists()
    assert [e for e, _ in epoch_checkpoints(directory)] == [3, 4]
    assert all(verify_checkpoint(path) is None for _, path in epoch_checkpoints(directory))

    # 3. The newest complete checkpoint is damaged on disk (one byte flipped): reported, skipped.
    newest = directory / checkpoint_name(4)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    finished = run_to_end(tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    warning = next(line for line in finished.stderr.splitlines() if line.startswith("WARNING"))
    assert str(newest) in warning and "corrupt or truncated" in warning
    assert f"resumed from {directory / checkpoint_name(3)} (epoch 3)" in finished.stderr
    assert [line for line in finished.stdout.splitlines() if line.startswith("EPOCH")] == [
        f"EPOCH {e} done" for e in (4, 5, 6)
    ]

    resumed = torch.load(tmp_path / "codes.pt", weights_only=True)
    assert resumed["resumed_from_epoch"] == 3
    assert torch.equal(resumed["final"], reference["final"])
    assert torch.equal(resumed["best"], reference["best"]) and resumed["best_epoch"] == reference["best_epoch"]
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")], "stale temporary files are cleaned up"

