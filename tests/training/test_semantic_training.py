"""The semantic term in training on UMLS: off means exactly off (same weights as a model without the
feature), on trains the head and is logged, resume stays bit-identical, bad setups are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.semantics.loss import TextTargets
from rq_kg_pipeline.training import TrainConfig, TrainQueries, fit
from rq_kg_pipeline.training.loop import train_step

TINY = dict(init_dim=16, gcn_dim=16, gcn_layers=1, seq_len=2, num_code=16, num_quantizers=2, tf_layers=1, att_head=2, kernel_size=3)
CONFIG = TrainConfig(
    epochs=3, batch_size=256, lr=0.01, eval_every=3, checkpoint_every=1, device="cpu", bf16=False, seed=5,
    eval_batch_size=512, semantic_weight=0.5,
)  # fmt: skip
TIMINGS = {"epoch_seconds", "eval_seconds", "steps_per_second", "peak_memory_gib"}


@pytest.fixture(scope="module")
def filter_index(umls) -> FilterIndex:
    return FilterIndex.build([umls.train, umls.valid, umls.test], umls.num_entities, umls.num_relations)


@pytest.fixture(scope="module")
def text(umls) -> TextTargets:
    """Unit targets with some entities masked out (as unnamed ones are)."""
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(umls.num_entities, 8, generator=generator), dim=1)
    mask = torch.arange(umls.num_entities) % 7 != 0
    return TextTargets(embeddings * mask.unsqueeze(1), mask)


def model(umls, semantic_dim: int = 0) -> RQGCN:
    torch.manual_seed(0)
    return RQGCN(umls.num_entities, umls.num_relations, **TINY, semantic_dim=semantic_dim)


def run(umls, filter_index, net, config, text=None, **kwargs):
    return fit(net, umls.graph, umls.train, umls.valid, filter_index, config, progress=False, text=text, **kwargs)


def plain(history):
    return [{k: v for k, v in m.items() if k not in TIMINGS} for m in history]


def test_weight_zero_trains_exactly_as_without_the_feature(umls, filter_index, text):
    off = replace(CONFIG, semantic_weight=0.0, epochs=2, eval_every=2)
    without = model(umls)
    reference = run(umls, filter_index, without, off, checkpoint_dir=None)
    with_head = model(umls, semantic_dim=8)
    head_before = {k: v.clone() for k, v in with_head.semantic_head.state_dict().items()}
    result = run(umls, filter_index, with_head, off, text, checkpoint_dir=None)
    state = with_head.state_dict()
    for key, value in without.state_dict().items():  # bit-identical: the head is built last, never used
        assert torch.equal(state[key], value), key
    assert all(torch.equal(with_head.semantic_head.state_dict()[k], v) for k, v in head_before.items())
    assert plain(result.history) == plain(reference.history)
    assert "semantic_loss" not in result.history[0]


def test_train_step_gives_the_head_a_gradient_only_when_weighted(umls, text):
    queries = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations)
    batch = next(queries.batches(128, torch.Generator().manual_seed(0), 0.1))
    for weight in (0.0, 0.5):
        net = model(umls, semantic_dim=8).train()
        optimizer = torch.optim.Adam(net.parameters())
        stats, _ = train_step(net, umls.graph, batch, optimizer, replace(CONFIG, semantic_weight=weight), text=text)
        grad = net.semantic_head.weight.grad
        if weight:
            assert grad is not None and grad.abs().sum() > 0 and 0 < stats[3] < 2
        else:
            assert grad is None and stats[3] == 0


def test_semantic_term_is_learned_and_logged(umls, filter_index, text):
    net = model(umls, semantic_dim=8)
    start = net.semantic_head.weight.detach().clone()
    history = run(umls, filter_index, net, CONFIG, text, checkpoint_dir=None).history
    losses = [m["semantic_loss"] for m in history]
    assert losses[-1] < losses[0] and all(0 < v < 2 for v in losses), losses
    first = history[0]
    assert first["loss"] == pytest.approx(
        first["structure_loss"] + first["quant_loss"] + first["recon_loss"] + 0.5 * first["semantic_loss"]
    )
    assert not torch.equal(net.semantic_head.weight.detach(), start)


class Interrupted(Exception):
    pass


def test_resumed_run_with_the_term_matches_an_uninterrupted_one(umls, filter_index, text, tmp_path):
    whole = model(umls, semantic_dim=8)
    reference = run(umls, filter_index, whole, CONFIG, text, checkpoint_dir=tmp_path / "whole")

    def stop_after_two(epoch, metrics):
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(umls, filter_index, model(umls, semantic_dim=8), CONFIG, text, checkpoint_dir=tmp_path / "cut", on_epoch_end=stop_after_two)
    resumed_model = model(umls, semantic_dim=8)
    resumed = run(umls, filter_index, resumed_model, CONFIG, text, checkpoint_dir=tmp_path / "cut")
    assert resumed.resumed_from_epoch == 2
    assert plain(resumed.history) == plain(reference.history)
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


def test_bad_semantic_setups_are_refused(umls, filter_index, text):
    with pytest.raises(ValueError, match="semantic_weight > 0 needs text embeddings"):
        run(umls, filter_index, model(umls, semantic_dim=8), CONFIG, None, checkpoint_dir=None)
    with pytest.raises(ValueError, match="needs a model with semantic_dim = 8"):
        run(umls, filter_index, model(umls), CONFIG, text, checkpoint_dir=None)
    with pytest.raises(ValueError, match="semantic_weight must be >= 0"):
        TrainConfig(semantic_weight=-0.1)
    with pytest.raises(ValueError, match="semantic_dim must be >= 0"):
        RQGCN(umls.num_entities, umls.num_relations, **TINY, semantic_dim=-1)
    with pytest.raises(ValueError, match="no semantic head"):
        model(umls).semantic_projection(torch.zeros(2, 16))
