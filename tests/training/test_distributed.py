"""Data-parallel training on UMLS with 2 gloo processes: the shards cover each batch once, two
processes train the same weights as one with the same global batch and seed, and a 2-process
run resumes a 1-process checkpoint as if one process had gone on."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.training import TrainConfig, fit, load_checkpoint
from rq_kg_pipeline.training.distributed import DistributedTrainingError, launch
from rq_kg_pipeline.training.queries import TrainQueries
from tests.training.weights import assert_same_weights

# Dropout everywhere and ConvE's batch norms on: the shards must reproduce both exactly.
TINY = dict(init_dim=32, gcn_dim=32, gcn_layers=1, seq_len=4, num_code=32, num_quantizers=2, tf_layers=1, att_head=2)
CONFIG = TrainConfig(
    epochs=2, batch_size=256, lr=0.003, eval_every=2, checkpoint_every=1, device="cpu", seed=5, eval_batch_size=256
)


def tiny_model(umls) -> RQGCN:
    torch.manual_seed(0)
    return RQGCN(umls.num_entities, umls.num_relations, **TINY)


@pytest.fixture(scope="module")
def filter_index(umls) -> FilterIndex:
    return FilterIndex.build([umls.train, umls.valid, umls.test], umls.num_entities, umls.num_relations)


def train(umls, filter_index, config: TrainConfig, nproc: int, checkpoint_dir=None):
    args = (tiny_model(umls), umls.graph, umls.train, umls.valid, filter_index, config)
    kwargs = dict(checkpoint_dir=checkpoint_dir, progress=False)
    return fit(*args, **kwargs) if nproc == 1 else launch(nproc, "cpu", fit, *args, **kwargs)


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_cover_every_batch_once(umls, world_size):
    queries = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations)
    whole = list(queries.batches(100, torch.Generator().manual_seed(1), 0.1))
    shards = [list(queries.batches(100, torch.Generator().manual_seed(1), 0.1, rank=r, world_size=world_size)) for r in range(world_size)]
    assert all(len(s) == len(whole) == queries.num_batches(100, world_size) for s in shards)
    for i, batch in enumerate(whole):
        parts = [s[i] for s in shards]
        assert [p.start for p in parts] == sorted(p.start for p in parts) and parts[0].start == 0
        assert all(p.total == batch.heads.numel() and p.heads.numel() >= 1 for p in parts)
        for name in ("heads", "rels", "labels", "head_index"):
            assert torch.equal(torch.cat([getattr(p, name) for p in parts]), getattr(batch, name)), name
        assert all(torch.equal(p.unique_heads, batch.unique_heads) for p in parts)


def test_more_processes_than_queries_per_batch_is_refused(umls):
    queries = TrainQueries.build(umls.train, umls.num_entities, umls.num_relations)
    with pytest.raises(ValueError, match="3 processes need batches of at least 3 queries"):
        next(queries.batches(2, torch.Generator(), 0.1, rank=0, world_size=3))


def test_two_gloo_processes_train_the_weights_of_one(umls, filter_index):
    one = train(umls, filter_index, CONFIG, nproc=1)
    two = train(umls, filter_index, CONFIG, nproc=2)
    assert (one.best_epoch, two.best_epoch) == (2, 2)  # best state = the final weights
    assert_same_weights(one.best_state_dict, two.best_state_dict)
    for a, b in zip(one.history, two.history, strict=True):
        assert ("valid_mrr" in a) == ("valid_mrr" in b)  # validated at the same epochs
        for key in ("loss", "structure_loss", "quant_loss", "recon_loss", "grad_norm", "valid_mrr"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), key


def test_two_processes_resume_a_one_process_checkpoint(umls, filter_index, tmp_path):
    straight = train(umls, filter_index, CONFIG, nproc=1)
    train(umls, filter_index, replace(CONFIG, epochs=1), nproc=1, checkpoint_dir=tmp_path)
    resumed = train(umls, filter_index, CONFIG, nproc=2, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 1 and resumed.last_epoch == 2
    assert sorted(p.name for p in tmp_path.glob("checkpoint-epoch*.pt")) == ["checkpoint-epoch000001.pt", "checkpoint-epoch000002.pt"]
    assert straight.best_epoch == 2  # its best weights are its final ones
    assert_same_weights(straight.best_state_dict, load_checkpoint(tmp_path / "checkpoint-epoch000002.pt")["model"])


def test_a_failing_worker_is_reported_with_its_error(umls, filter_index):
    bad = replace(CONFIG, batch_size=1)  # 2 processes cannot split batches of one query
    with pytest.raises(DistributedTrainingError, match=r"rank \d failed: ValueError: 2 processes need batches of at least 2 queries"):
        train(umls, filter_index, bad, nproc=2)
