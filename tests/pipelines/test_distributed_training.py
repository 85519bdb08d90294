"""``training.distributed.nproc_per_node: 2`` through ``kedro run``: the training node starts two
gloo workers, and the one MLflow run records every epoch (logged by rank 0) and the process count."""

from __future__ import annotations

import mlflow

from tests.pipelines.project import ScratchProject


def test_training_node_trains_in_two_workers_into_one_mlflow_run(tmp_path):
    project = ScratchProject.create(tmp_path)
    params = "training.fit.epochs=4,training.fit.eval_every=2,training.fit.device=cpu,training.distributed.nproc_per_node=2"
    done = project.run("--pipelines=ingestion,training", f"--params={params}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training in 2 data-parallel workers (global batch 256)" in done.stdout + done.stderr
    assert (project.path / "data/06_models/umls/rqgcn.pt").is_file()

    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=["rq_kg_pipeline"], output_format="list")
    assert run.data.tags["processes"] == "2"
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train.loss")] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train.valid_mrr")] == [2, 4]
    assert run.data.metrics["train.best_epoch"] in (2, 4)
