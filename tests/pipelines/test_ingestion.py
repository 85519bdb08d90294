"""The ingestion pipeline end to end through ``kedro run``: UMLS (default), FB15k-237, bad input."""

from __future__ import annotations

import json
import shutil

import mlflow
import pandas as pd
import pytest

from tests.conftest import umls_dir
from tests.pipelines.project import ScratchProject


@pytest.fixture
def project(tmp_path):
    return ScratchProject.create(tmp_path)


def test_default_kg_ingestion_writes_artifacts_and_mlflow_run(project):
    done = project.run("--pipelines=ingestion")
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((project.path / "data/08_reporting/umls/kg_statistics.json").read_text())
    assert stats["num_entities"] == 135 and stats["num_relations"] == 46
    assert [stats[f"num_{s}_triples"] for s in ("train", "valid", "test")] == [5216, 652, 661]
    assert stats["num_edges_with_inverses"] == 2 * 5216
    train = pd.read_parquet(project.path / "data/03_primary/umls/train_ids.parquet")
    assert list(train.columns) == ["head", "relation", "tail"] and len(train) == 5216
    assert (project.path / "data/05_model_input/umls/kg_graph.dgl").is_file()

    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["rq_kg_pipeline"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["metrics.kg.num_entities"] == 135 and run["metrics.kg.num_train_triples"] == 5216
    assert run["params.ingestion.unseen_policy"] == "error"  # one readable parameter per leaf


def test_fb15k237_environment_reports_the_benchmark_sizes(project, fb15k237_dir):
    done = project.run("--pipelines=ingestion", "--env=fb15k237", env={"RQKG_KG_DIR": str(fb15k237_dir)})
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((project.path / "data/08_reporting/FB15k-237/kg_statistics.json").read_text())
    assert (stats["num_entities"], stats["num_relations"]) == (14541, 237)
    assert [stats[f"num_{s}_triples"] for s in ("train", "valid", "test")] == [272115, 17535, 20466]
    assert stats["isolated_entities"] == 36
    names = pd.read_parquet(project.path / "data/02_intermediate/FB15k-237/entity_names.parquet")
    assert len(names) == 14541


def test_bad_input_fails_before_any_artifact_is_written(project, tmp_path):
    kg = tmp_path / "my_kg"
    shutil.copytree(umls_dir(), kg)
    lines = (kg / "test.txt").read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].replace("\t", " ", 1)  # line 5: two fields
    (kg / "test.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = project.run("--pipelines=ingestion", env={"RQKG_KG_DIR": str(kg), "RQKG_KG_NAME": "my_kg"})
    assert done.returncode != 0
    assert f"{kg / 'test.txt'}:5: expected 3 tab-separated fields (head, relation, tail), found 2" in done.stderr
    assert project.output_files() == [], "a failing run must not leave artifacts"


def test_invalid_parameter_is_rejected_before_any_node_runs(project):
    done = project.run("--pipelines=ingestion", "--params=ingestion.unseen_policy=ignore")
    assert done.returncode != 0
    assert "unseen_policy" in done.stderr
    assert project.output_files() == []
