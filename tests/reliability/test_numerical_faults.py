"""A NaN/inf loss stops training with a message naming epoch, step and loss term, keeps the last
good checkpoint (a rerun resumes from it), and makes ``kedro run`` exit non-zero."""

from __future__ import annotations

import re
from dataclasses import replace

import mlflow
import pandas as pd
import pytest
import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.kg.indexing import ID_COLUMNS
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.params import ModelParams
from rq_kg_pipeline.pipelines.training import nodes as training_nodes
from rq_kg_pipeline.training.checkpoint import BEST_NAME, epoch_checkpoints, verify_checkpoint
from rq_kg_pipeline.training.loop import NonFiniteLossError, fit
from rq_kg_pipeline.training.queries import TrainQueries
from tests.pipelines.project import ScratchProject
from tests.reliability.train_driver import CONFIG, MODEL

FOUR_EPOCHS = replace(CONFIG, epochs=4)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def filter_index(umls) -> FilterIndex:
    return FilterIndex.build([umls.train, umls.valid, umls.test], umls.num_entities, umls.num_relations)


def poisoned(module: torch.nn.Module, call: int, term: str) -> torch.nn.Module:
    """``module`` whose ``call``-th training forward returns a NaN ``term`` (the rest untouched)."""
    seen = {"n": 0}

    def hook(mod, args, out):
        if not mod.training:
            return out
        seen["n"] += 1
        if seen["n"] != call:
            return out
        if term == "structure_loss":
            return out._replace(logits=out.logits * float("nan"))
        if term == "recon_loss":
            return out._replace(recon_loss=out.recon_loss + float("inf"))
        return out._replace(quant=out.quant._replace(loss=out.quant.loss * float("nan")))

    module.register_forward_hook(hook)
    return module


def steps_per_epoch(umls) -> int:
    return TrainQueries.build(umls.train, umls.num_entities, umls.num_relations).num_batches(CONFIG.batch_size)


def tiny_model(umls) -> RQGCN:
    torch.manual_seed(CONFIG.seed)
    return RQGCN(umls.num_entities, umls.num_relations, **MODEL)


@pytest.mark.parametrize("term", ["structure_loss", "quant_loss", "recon_loss"])
def test_nan_mid_training_names_epoch_step_term_and_keeps_the_last_good_checkpoint(umls, filter_index, tmp_path, term):
    steps = steps_per_epoch(umls)
    model = poisoned(tiny_model(umls), call=2 * steps + 2, term=term)  # epoch 3, step 2
    expected = rf"^non-finite {term} at epoch 3, step 2 \(global step {2 * steps + 2}\): "
    with pytest.raises(NonFiniteLossError, match=expected):
        fit(model, umls.graph, umls.train, umls.valid, filter_index, FOUR_EPOCHS, checkpoint_dir=tmp_path, progress=False)
    kept = epoch_checkpoints(tmp_path)
    assert [e for e, _ in kept] == [1, 2]
    assert all(verify_checkpoint(p) is None for _, p in kept) and verify_checkpoint(tmp_path / BEST_NAME) is None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    if term != "structure_loss":
        return
    resumed = fit(tiny_model(umls), umls.graph, umls.train, umls.valid, filter_index, FOUR_EPOCHS,
                  checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    assert resumed.resumed_from_epoch == 2 and resumed.last_epoch == 4


def id_frame(ids: torch.Tensor) -> pd.DataFrame:
    return pd.DataFrame(ids.numpy(), columns=ID_COLUMNS)


def test_training_node_says_which_checkpoint_is_kept(umls, tmp_path, monkeypatch):
    steps = steps_per_epoch(umls)

    class PoisonedRQGCN(RQGCN):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            poisoned(self, call=steps + 3, term="recon_loss")  # epoch 2, step 3

    monkeypatch.setattr(training_nodes, "RQGCN", PoisonedRQGCN)
    params = ModelParams(**{**MODEL, "num_quantizers": 2})
    with pytest.raises(NonFiniteLossError) as info:
        training_nodes.train_model(umls.graph, id_frame(umls.train), id_frame(umls.valid), id_frame(umls.test),
                                   params, FOUR_EPOCHS, str(tmp_path), "umls")  # fmt: skip
    message = str(info.value)
    assert message.startswith(f"training stopped: non-finite recon_loss at epoch 2, step 3 (global step {steps + 3}): ")
    (run_dir,) = tmp_path.iterdir()
    assert message.endswith(f"; the last good checkpoint {run_dir / 'checkpoint-epoch000001.pt'} is kept")


TINY_KEDRO = ",".join(
    [f"training.model.{k}={v}" for k, v in {**MODEL, "kernel_size": 3}.items()]
    + ["training.fit.epochs=2", "training.fit.device=cpu", "training.fit.bf16=false", "training.fit.lr=1e30"]
)


def test_kedro_run_with_a_diverging_lr_exits_non_zero_and_writes_no_model(tmp_path):
    project = ScratchProject.create(tmp_path)
    done = project.run("--pipelines=ingestion,training", f"--params={TINY_KEDRO}", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert re.search(
        r"NonFiniteLossError: training stopped: non-finite (structure_loss|quant_loss|recon_loss|grad_norm) "
        r"at epoch 1, step \d+ \(global step \d+\): .*; no checkpoint was written yet in \S+",
        done.stderr,
    ), done.stderr[-3000:]
    written = {p.relative_to(project.path / "data").as_posix() for p in project.output_files()}
    assert "06_models/umls/rqgcn.pt" not in written and "08_reporting/umls/training_history.csv" not in written
    assert "03_primary/umls/train_ids.parquet" in written  # ingestion's artifacts stay
    assert not any(name.endswith(".lock") for name in written), "the run lock is released on failure"
    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["rq_kg_pipeline"])
    assert runs["status"].tolist() == ["FAILED"]
