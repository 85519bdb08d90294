"""The training loop on UMLS with a tiny RQ-GCN: it learns, resumes bit-identically, survives a
corrupt checkpoint, names non-finite losses, and stops early."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.training import NonFiniteLossError, TrainConfig, fit, load_checkpoint
from rq_kg_pipeline.training import loop
from rq_kg_pipeline.training.checkpoint import BEST_NAME, epoch_checkpoints, write_verified
from rq_kg_pipeline.training.loop import _valid_metrics

TINY = dict(
    init_dim=32, gcn_dim=32, gcn_layers=1, seq_len=4, num_code=32, num_quantizers=2, tf_layers=1, att_head=2
)
CONFIG = TrainConfig(
    epochs=6, batch_size=128, lr=0.01, label_smoothing=0.1, grad_clip=1.0, recon_weight=1.0,
    eval_every=2, patience=0, checkpoint_every=1, device="cpu", bf16=False, seed=3, eval_batch_size=256,
)  # fmt: skip
TIMING_KEYS = {"epoch_seconds", "eval_seconds", "checkpoint_seconds", "steps_per_second", "peak_memory_gib"}  # measured, not computed


class Interrupted(Exception):
    """Raised from on_epoch_end to simulate a crash after a checkpoint was written."""


def tiny_model(umls, seed: int = 0, **overrides) -> RQGCN:
    torch.manual_seed(seed)
    return RQGCN(umls.num_entities, umls.num_relations, **{**TINY, **overrides})


@pytest.fixture(scope="module")
def filter_index(umls) -> FilterIndex:
    return FilterIndex.build([umls.train, umls.valid, umls.test], umls.num_entities, umls.num_relations)


@pytest.fixture(scope="module")
def reference(umls, filter_index, tmp_path_factory):
    """One uninterrupted run of CONFIG: (model, result, its checkpoint dir, callback log)."""
    directory = tmp_path_factory.mktemp("reference")
    model = tiny_model(umls)
    seen: list[tuple[int, dict[str, float]]] = []
    result = fit(
        model, umls.graph, umls.train, umls.valid, filter_index, CONFIG,
        checkpoint_dir=directory, on_epoch_end=lambda e, m: seen.append((e, m)), progress=False,
    )  # fmt: skip
    return model, result, directory, seen


def without_timings(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in history]


def random_mrr(filter_index: FilterIndex, triples: torch.Tensor, num_relations: int) -> float:
    """Expected filtered MRR of a uniformly random order: mean over queries of H(n) / n."""
    ent = torch.cat([triples[:, 0], triples[:, 2]])
    rel = torch.cat([triples[:, 1], triples[:, 1] + num_relations])
    n = filter_index.num_entities - filter_index.mask(ent, rel).sum(dim=1) + 1  # candidates incl. target
    harmonic = torch.cumsum(1.0 / torch.arange(1, filter_index.num_entities + 1, dtype=torch.float64), 0)
    return float((harmonic[n - 1] / n).mean())


def test_training_lowers_loss_and_beats_random(umls, filter_index, reference) -> None:
    model, result, directory, seen = reference
    history = result.history
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert all(m["checkpoint_seconds"] > 0 for _, m in seen)  # a checkpoint every epoch here: its writing time too
    assert [{k: v for k, v in m.items() if k != "checkpoint_seconds"} for _, m in seen] == history
    per_level = {f"{k}_l{q}" for k in ("quant_loss", "utilisation", "perplexity") for q in (1, 2)}
    base = {"epoch", "loss", "structure_loss", "quant_loss", "recon_loss", "grad_norm", "epoch_seconds", "steps_per_second", "peak_memory_gib"}
    assert set(history[0]) == base | per_level
    assert {"valid_mrr", "valid_hits@10", "valid_mr", "valid_hits@1", "valid_hits@3"} <= set(history[1])
    assert history[0]["loss"] == pytest.approx(
        history[0]["structure_loss"] + history[0]["quant_loss"] + history[0]["recon_loss"]
    )
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    assert history[-1]["structure_loss"] < history[0]["structure_loss"]
    assert all(0 < history[-1][f"utilisation_l{q}"] <= 1 for q in (1, 2))
    baseline = random_mrr(filter_index, umls.valid, umls.num_relations)
    assert 0.04 < baseline < 0.08  # filtering leaves ~100 candidates per UMLS query
    assert result.best_valid_mrr > 1.5 * baseline
    assert result.best_valid_mrr == max(m["valid_mrr"] for m in history if "valid_mrr" in m)
    assert result.resumed_from_epoch is None and result.last_epoch == 6 and not result.stopped_early


def test_best_state_is_kept_in_memory_and_on_disk(umls, filter_index, reference) -> None:
    _, result, directory, _ = reference
    best = tiny_model(umls, seed=9)
    best.load_state_dict(result.best_state_dict)
    assert all(t.device.type == "cpu" for t in result.best_state_dict.values())
    metrics = _valid_metrics(best, umls.graph, umls.valid, filter_index, CONFIG.eval_batch_size)
    assert metrics["valid_mrr"] == result.best_valid_mrr
    on_disk = load_checkpoint(directory / BEST_NAME)
    assert on_disk["epoch"] == result.best_epoch
    assert all(torch.equal(on_disk["model"][k], v) for k, v in result.best_state_dict.items())


def test_interrupted_and_resumed_run_matches_uninterrupted(umls, filter_index, reference, tmp_path) -> None:
    ref_model, ref_result, _, _ = reference

    def crash_after_two(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(tiny_model(umls), umls.graph, umls.train, umls.valid, filter_index, CONFIG,
            checkpoint_dir=tmp_path, on_epoch_end=crash_after_two, progress=False)  # fmt: skip
    torch.manual_seed(1234)  # the resumed run must not depend on the global RNG at call time
    fresh = tiny_model(umls, seed=77)
    resumed = fit(fresh, umls.graph, umls.train, umls.valid, filter_index, CONFIG,
                  checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    assert resumed.resumed_from_epoch == 2
    reference_state = ref_model.state_dict()
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, reference_state[name]), name
    assert without_timings(resumed.history) == without_timings(ref_result.history)
    assert resumed.best_epoch == ref_result.best_epoch


def test_checkpoint_min_seconds_skips_due_checkpoints(umls, filter_index, tmp_path, monkeypatch) -> None:
    """A due checkpoint waits until checkpoint_min_seconds after the last write (or the start); the
    last epoch always writes one. The best weights are written with it, not at each improvement."""
    writes: list[str] = []
    monkeypatch.setattr(loop, "write_verified", lambda path, payload: writes.append(path.name) or write_verified(path, payload))
    config = replace(CONFIG, epochs=3, eval_every=1, checkpoint_every=1, checkpoint_min_seconds=3600.0)
    result = fit(tiny_model(umls, seed=5), umls.graph, umls.train, umls.valid, filter_index, config, checkpoint_dir=tmp_path, progress=False)
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [3]
    assert result.best_epoch > 1 and writes == [BEST_NAME]  # improved twice or more, written once (checkpoints: save_checkpoint)
    assert load_checkpoint(tmp_path / BEST_NAME)["epoch"] == result.best_epoch
    with pytest.raises(ValueError, match="checkpoint_min_seconds"):
        replace(CONFIG, checkpoint_min_seconds=-1.0)


def test_finished_run_returns_stored_result(umls, filter_index, reference) -> None:
    ref_model, ref_result, directory, _ = reference
    calls: list[int] = []
    model = tiny_model(umls, seed=5)
    again = fit(model, umls.graph, umls.train, umls.valid, filter_index, CONFIG,
                checkpoint_dir=directory, on_epoch_end=lambda e, m: calls.append(e), progress=False)  # fmt: skip
    assert calls == [] and again.resumed_from_epoch == 6
    assert again.history == ref_result.history and again.best_valid_mrr == ref_result.best_valid_mrr
    assert all(torch.equal(v, ref_model.state_dict()[k]) for k, v in model.state_dict().items())


def test_corrupt_latest_checkpoint_falls_back_to_previous(umls, filter_index, reference, tmp_path, caplog) -> None:
    ref_model, _, _, _ = reference

    def crash_after_three(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(tiny_model(umls), umls.graph, umls.train, umls.valid, filter_index, CONFIG,
            checkpoint_dir=tmp_path, on_epoch_end=crash_after_three, progress=False)  # fmt: skip
    kept = epoch_checkpoints(tmp_path)
    assert [e for e, _ in kept] == [2, 3]
    newest: Path = kept[-1][1]
    newest.write_bytes(newest.read_bytes()[:-1000])  # truncated, as by a crash mid-copy
    model = tiny_model(umls, seed=8)
    with caplog.at_level(logging.WARNING):
        resumed = fit(model, umls.graph, umls.train, umls.valid, filter_index, CONFIG,
                      checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    assert "corrupt or truncated" in caplog.text and newest.name in caplog.text
    assert resumed.resumed_from_epoch == 2
    assert all(torch.equal(v, ref_model.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("term", "poison"),
    [
        ("structure_loss", lambda out: out._replace(logits=out.logits * float("nan"))),
        ("recon_loss", lambda out: out._replace(recon_loss=out.recon_loss + float("inf"))),
        ("quant_loss", lambda out: out._replace(quant=out.quant._replace(loss=out.quant.loss * float("nan")))),
    ],
)
def test_non_finite_loss_names_epoch_step_and_term(umls, filter_index, term, poison) -> None:
    model = tiny_model(umls)
    calls = {"n": 0}

    def hook(module, args, out):
        calls["n"] += 1
        return poison(out) if calls["n"] == 3 else out

    model.register_forward_hook(hook)
    with pytest.raises(NonFiniteLossError, match=rf"non-finite {term} at epoch 1, step 3 \(global step 3\)"):
        fit(model, umls.graph, umls.train, umls.valid, filter_index, CONFIG, checkpoint_dir=None, progress=False)


def test_early_stopping_stops_after_patience(umls, filter_index, tmp_path) -> None:
    # A learning rate this small leaves the weights (and so valid MRR) practically unchanged.
    config = replace(CONFIG, epochs=30, lr=1e-12, eval_every=1, patience=2, checkpoint_every=0)
    model = tiny_model(umls, revive_dead_codes=False)
    seen: list[int] = []
    result = fit(model, umls.graph, umls.train, umls.valid, filter_index, config,
                 checkpoint_dir=tmp_path, on_epoch_end=lambda e, m: seen.append(e), progress=False)  # fmt: skip
    assert result.stopped_early and result.last_epoch < config.epochs
    assert result.last_epoch == result.best_epoch + config.patience
    assert seen == list(range(1, result.last_epoch + 1))
    assert all(m["valid_mrr"] <= result.best_valid_mrr for m in result.history[result.best_epoch :])
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [result.last_epoch]  # written at the stop
    again = fit(tiny_model(umls), umls.graph, umls.train, umls.valid, filter_index, config,
                checkpoint_dir=tmp_path, on_epoch_end=lambda e, m: seen.append(-e), progress=False)  # fmt: skip
    assert again.stopped_early and again.last_epoch == result.last_epoch and min(seen) > 0


def test_seeded_runs_are_identical_without_checkpoints(umls, filter_index) -> None:
    config = replace(CONFIG, epochs=1)
    first, second = tiny_model(umls), tiny_model(umls)
    fit(first, umls.graph, umls.train, umls.valid, filter_index, config, checkpoint_dir=None, progress=False)
    fit(second, umls.graph, umls.train, umls.valid, filter_index, config, checkpoint_dir=None, progress=False)
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())


def test_resume_refuses_a_different_model_config(umls, filter_index, tmp_path) -> None:
    config = replace(CONFIG, epochs=1)
    fit(tiny_model(umls), umls.graph, umls.train, umls.valid, filter_index, config,
        checkpoint_dir=tmp_path, progress=False, model_config=TINY)  # fmt: skip
    with pytest.raises(ValueError, match="model_config"):
        fit(tiny_model(umls), umls.graph, umls.train, umls.valid, filter_index, replace(config, epochs=2),
            checkpoint_dir=tmp_path, progress=False, model_config={**TINY, "seq_len": 8})  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("lr", float("inf")), ("label_smoothing", 1.0), ("eval_every", 0), ("device", "tpu"),
     ("patience", -1), ("grad_clip", -1.0)],
)  # fmt: skip
def test_config_rejects_bad_values(field, value) -> None:
    with pytest.raises(ValueError, match=field):
        replace(CONFIG, **{field: value})
