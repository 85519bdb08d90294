"""Parameters are validated before any node runs; kedro-viz builds the project's pipelines."""

from __future__ import annotations

import json

import pytest

from rq_kg_pipeline.pipelines import compare, evaluation, extraction, gen_llm_data, ingestion, training
from tests.pipelines.project import ScratchProject

PIPELINES = {
    "ingestion": ingestion.pipeline,
    "training": training.pipeline,
    "extraction": extraction.pipeline,
    "evaluation": evaluation.pipeline,
    "gen_llm_data": gen_llm_data.pipeline,
    "compare": compare.pipeline,
}


@pytest.fixture
def project(tmp_path):
    return ScratchProject.create(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--params=training.model.num_quantiziers=2"],
            "training.model: unknown key 'num_quantiziers' (did you mean 'num_quantizers'?); allowed keys: activation,",
        ),
        # every block is checked, not only those of the pipelines that run
        (["--pipelines=ingestion", "--params=training.fit.lrr=0.1"], "training.fit: unknown key 'lrr' (did you mean 'lr'?)"),
    ],
)
def test_invalid_parameters_stop_the_run_before_anything_is_written(project, args, message):
    # Every rule is tested in-process in tests/test_params.py; these show the hook runs first in `kedro run`.
    done = project.run(*args)
    assert done.returncode != 0
    assert "ParameterError: invalid parameters" in done.stderr and message in done.stderr
    assert project.output_files() == []
    assert not (project.path / "mlflow.db").exists(), "refused before kedro-mlflow opens its store"


def test_viz_build_lists_every_pipeline_with_its_nodes_and_layers(project):
    done = project.kedro("viz", "build")
    assert done.returncode == 0, done.stderr[-3000:]
    api = project.path / "build" / "api"
    main = json.loads((api / "main").read_text())
    assert {p["id"] for p in main["pipelines"]} == {"__default__", *PIPELINES}
    for name, module in PIPELINES.items():
        listed = json.loads((api / "pipelines" / name).read_text())
        tasks = sorted(n["name"] for n in listed["nodes"] if n["type"] == "task")
        # kedro-viz names a namespaced node without its namespace (vq.train -> train)
        expected = sorted(node.name.rsplit(".", 1)[-1] for node in module.create_pipeline().nodes)
        assert tasks == expected, name
    default_tasks = {n["name"] for n in json.loads((api / "pipelines" / "__default__").read_text())["nodes"] if n["type"] == "task"}
    assert default_tasks == {n.name for name in PIPELINES if name != "compare" for n in PIPELINES[name].create_pipeline().nodes}
    layers = {n["name"]: n.get("layer") for n in main["nodes"] if n["type"] == "data"}
    assert all(layers.values()), [name for name, layer in layers.items() if not layer]
    assert set(layers.values()) == {"raw", "intermediate", "primary", "model_input", "models", "model_output", "reporting"}
    arms = json.loads((api / "pipelines" / "compare").read_text())["modular_pipelines"]
    assert {"vq", "rq"} <= set(arms), "the VQ and RQ arms are two namespaces (groups in kedro-viz)"
