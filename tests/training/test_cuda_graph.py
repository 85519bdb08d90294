"""The CUDA-graph training step: its fixed-shape (padded) batches train exactly like plain ones (CPU),
and replaying the recorded step trains like running it eagerly (CUDA); training with torch.compile."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import logging
from dataclasses import replace

import pytest
import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.semantics.loss import TextTargets
from rq_kg_pipeline.training import TrainConfig, fit
from rq_kg_pipeline.training.cuda_graph import GraphedStep, unpadded
from rq_kg_pipeline.training.loop import compiled_for_training, graphed_train_step, padded_heads, train_step
from rq_kg_pipeline.training.queries import TrainQueries
from tests.training.weights import assert_same_weights

# No dropout: the padded and plain steps then draw no random numbers that could differ.
NO_DROPOUT = dict(
    init_dim=32, gcn_dim=32, gcn_layers=1, seq_len=4, num_code=32, num_quantizers=2, tf_layers=1, att_head=2,
    num_filters=8, kernel_size=3, gcn_dropout=0.0, tf_dropout=0.0, conve_dropout=(0.0, 0.0, 0.0), semantic_dim=8,
)  # fmt: skip
CONFIG = TrainConfig(batch_size=64, lr=0.01, semantic_weight=0.5, device="cpu", seed=5)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _model_and_text(umls) -> tuple[RQGCN, TextTargets]:
    torch.manual_seed(0)
    model = RQGCN(umls.num_entities, umls.num_relations, **NO_DROPOUT).train()
    text = TextTargets(torch.randn(umls.num_entities, 8), torch.rand(umls.num_entities) > 0.3)
    return model, text


def _batches(umls, pad: int, device: str = "cpu", steps: int = 4) -> list:
    """The first ``steps`` batches of as many epochs as needed (UMLS: 24 of 64 queries, then one of 24)."""
    queries = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations)
    generator = torch.Generator().manual_seed(CONFIG.seed)
    epochs = itertools.chain.from_iterable(
        queries.batches(CONFIG.batch_size, generator, CONFIG.label_smoothing, device=device, pad_heads=pad) for _ in itertools.count()
    )
    return [b for _, b in zip(range(steps), epochs)]


def test_padded_batches_hold_the_distinct_heads_then_padding(umls) -> None:
    pad = padded_heads(CONFIG, umls.graph)
    assert pad == CONFIG.batch_size  # UMLS has more entities than a batch has queries
    for plain, padded in zip(_batches(umls, 0), _batches(umls, pad)):
        u = plain.unique_heads.numel()
        assert padded.num_unique == u < pad and padded.unique_heads.shape == (pad,)
        assert torch.equal(padded.valid_heads, torch.arange(pad) < u)
        assert torch.equal(padded.unique_heads[:u], plain.unique_heads) and not padded.unique_heads[u:].any()
        assert torch.equal(padded.head_index, plain.head_index) and torch.equal(padded.labels, plain.labels)
        assert torch.equal(unpadded(padded).unique_heads, plain.unique_heads) and unpadded(padded).valid_heads is None
    with pytest.raises(ValueError, match="pad_heads=3 is less than"):
        _batches(umls, 3)


def test_padded_steps_train_like_plain_steps(umls) -> None:
    """Padding is tokenised and quantized but counts in nothing: four steps (k-means init, the
    semantic term, Adam) give the same losses, statistics and weights as the unpadded steps."""
    plain_model, text = _model_and_text(umls)
    padded_model = copy.deepcopy(plain_model)
    runs = []
    for model, pad in ((plain_model, 0), (padded_model, padded_heads(CONFIG, umls.graph))):
        torch.manual_seed(1)  # k-means initialisation draws its seeds alike
        optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG.lr)
        stats = []
        for batch in _batches(umls, pad):
            step_stats, levels = train_step(model, umls.graph, batch, optimizer, CONFIG, text=text)
            optimizer.step()
            stats.append(torch.cat([step_stats, levels.flatten()]))
        runs.append(torch.stack(stats))
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=1e-6)
    assert runs[0][:, 3].gt(0).all()  # the semantic term was on
    for (name, a), b in zip(plain_model.state_dict().items(), padded_model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_graphed_step_refuses_an_optimizer_it_cannot_record(umls) -> None:
    model, _ = _model_and_text(umls)
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedStep(lambda batch: (), torch.optim.Adam(model.parameters()))


@needs_cuda
@pytest.mark.parametrize(("steps", "eager", "replays"), [(6, 3, 3), (50, 4, 46)])
def test_replayed_steps_train_like_eager_steps(umls, steps: int, eager: int, replays: int) -> None:
    """Six steps: three eager warm-ups, the recorded one and two replays; or two epochs, whose last
    batches (24 queries) are recorded as a second graph after one eager warm-up. Each step against
    an eager step from the same weights and optimizer state (float32; CUDA's atomic sums differ in
    the last bits, so trajectories would drift apart over 50 steps). No code reaches the dead-code
    patience: revival draws its rows differently for padded and plain batches."""
    eager_model, text = _model_and_text(umls)
    eager_model.quantizer.dead_code_patience = steps + 1
    eager_model.cuda()
    graph = umls.graph.to("cuda")
    with torch.no_grad():  # k-means initialisation before the copy: both start from one codebook
        eager_model(graph, torch.arange(umls.num_entities, device="cuda"), torch.zeros(umls.num_entities, dtype=torch.long, device="cuda"))
    graphed_model = copy.deepcopy(eager_model)
    text = text.to("cuda")
    config = replace(CONFIG, device="cuda")
    eager_opt = torch.optim.Adam(eager_model.parameters(), lr=config.lr, fused=True, capturable=True)
    graphed_opt = torch.optim.Adam(graphed_model.parameters(), lr=config.lr, fused=True, capturable=True)
    graphed = graphed_train_step(graphed_model, graph, graphed_opt, config, text=text)
    for step, batch in enumerate(_batches(umls, padded_heads(config, umls.graph), device="cuda", steps=steps)):
        if step:  # the eager model starts where the graphed one is (copies: the graph owns its tensors)
            eager_model.load_state_dict(graphed_model.state_dict())
            eager_opt.load_state_dict(copy.deepcopy(graphed_opt.state_dict()))
        eager_stats, _ = train_step(eager_model, graph, unpadded(batch), eager_opt, config, text=text)
        eager_opt.step()
        graphed_stats = graphed(batch)[0]
        torch.testing.assert_close(graphed_stats, eager_stats, rtol=1e-3, atol=1e-4, msg=lambda m: f"step {step}: {m}")
        assert_same_weights(graphed_model.state_dict(), eager_model.state_dict(), rtol=1e-3, atol=1e-4)
    assert graphed.replays == replays and graphed.eager_steps == eager
    # the last batches ran uncompiled; the compiler's stance is back to default (a leaked
    # "force_eager" once made every later fit record its graph from uncompiled modules)
    assert torch._dynamo.eval_frame._stance.stance == "default"


@needs_cuda
def test_fit_with_cuda_graphs_learns_and_resumes(umls, tmp_path) -> None:
    """The loop's CUDA-graph route (bf16, dropout on) trains UMLS to a useful MRR and resumes
    (30 epochs: after 20, this setting gave 0.29-0.33 over seeds, too near the bar)."""
    torch.manual_seed(1)
    model = RQGCN(umls.num_entities, umls.num_relations, init_dim=32, gcn_dim=32, seq_len=4, num_code=32, num_quantizers=2)
    index = FilterIndex.build([umls.train, umls.valid, umls.test], umls.num_entities, umls.num_relations)
    config = TrainConfig(epochs=30, batch_size=256, lr=0.01, eval_every=10, device="cuda", bf16=True, seed=2)
    first = fit(model, umls.graph, umls.train, umls.valid, index, replace(config, epochs=10), checkpoint_dir=tmp_path, progress=False)
    second = fit(model, umls.graph, umls.train, umls.valid, index, config, checkpoint_dir=tmp_path, progress=False)
    assert second.resumed_from_epoch == 10 and second.last_epoch == 30
    assert second.history[-1]["valid_mrr"] > max(0.3, first.history[-1]["valid_mrr"] - 0.05)


def test_compiled_for_training_compiles_only_inside(umls, caplog) -> None:
    """ConvE and the sequence encoder are compiled inside the context and plain again after it;
    without Triton the context says so and leaves them plain."""
    model, _ = _model_and_text(umls)
    parts = (model.scorer, model.sequence_encoder)
    with caplog.at_level(logging.WARNING), compiled_for_training(model, True):
        inside = [m._compiled_call_impl is not None for m in parts]
    if importlib.util.find_spec("triton") is None:
        assert inside == [False, False] and "needs Triton" in caplog.text
    else:
        assert inside == [True, True]
    assert all(m._compiled_call_impl is None for m in parts)
    with compiled_for_training(model, False):
        assert all(m._compiled_call_impl is None for m in parts)


@needs_cuda
def test_fit_compiled_trains_like_eager(umls) -> None:
    """Two epochs with torch.compile and CUDA graphs reach the losses of the eager run (float32, no
    dropout), up to the run-to-run spread of CUDA's atomic sums (eager runs differ by up to ~4%)."""
    index = FilterIndex.build([umls.train, umls.valid, umls.test], umls.num_entities, umls.num_relations)
    config = replace(CONFIG, epochs=2, eval_every=2, device="cuda", semantic_weight=0.0)
    runs = []
    for compiled in (False, True):
        model, _ = _model_and_text(umls)
        torch.manual_seed(3)
        runs.append(fit(model, umls.graph, umls.train, umls.valid, index, replace(config, torch_compile=compiled), checkpoint_dir=None, progress=False))
        assert all(m._compiled_call_impl is None for m in (model.scorer, model.sequence_encoder))
    for eager, compiled in zip(*(r.history for r in runs)):
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=0.06)
    assert runs[1].best_valid_mrr == pytest.approx(runs[0].best_valid_mrr, abs=0.05)
