"""Parameters are validated before any node runs; kedro-viz builds the project's pipelines."""

from __future__ import annotations

import json

import pytest

from tests.pipelines.project import ScratchProject


@pytest.fixture
def project(tmp_path):
    return ScratchProject.create(tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.model.num_quantizers=0", "num_quantizers must be >= 1"),
        ("training.model.num_code=1", "num_code"),
        ("training.model.seq_len=0", "seq_len"),
        ("training.model.att_head=3", "gcn_dim (64) must be divisible by att_head (3)"),
        ("training.model.k_h=5", "k_h and k_w must be given together"),
        ("training.model.backend=cuda_graph", "backend"),
        ("training.fit.lr=-1", "lr must be a positive finite number"),
        ("training.model.num_quantiziers=2", "num_quantiziers"),
    ],
)
def test_invalid_training_parameters_stop_the_run_before_anything_is_written(project, override, message):
    done = project.run(f"--params={override}")
    assert done.returncode != 0
    assert message in done.stderr
    assert project.output_files() == []


def test_viz_build_lists_every_pipeline_and_the_ingestion_nodes(project):
    done = project.kedro("viz", "build")
    assert done.returncode == 0, done.stderr[-3000:]
    api = project.path / "build" / "api"
    main = json.loads((api / "main").read_text())
    assert {p["id"] for p in main["pipelines"]} >= {"__default__", "ingestion", "training", "extraction", "evaluation", "gen_llm_data", "compare"}
    ingestion = json.loads((api / "pipelines" / "ingestion").read_text())
    tasks = {n["name"] for n in ingestion["nodes"] if n["type"] == "task"}
    assert tasks == {"index_triples", "build_training_graph", "convert_to_dgl", "summarise_kg"}
    layers = {n["name"]: n.get("layer") for n in main["nodes"] if n["type"] == "data"}
    assert all(layers.values()), [name for name, layer in layers.items() if not layer]
    compare = json.loads((api / "pipelines" / "compare").read_text())
    assert {"vq", "rq"} <= set(compare["modular_pipelines"])
