"""kedro-viz as a person sees it: ``kedro viz build --include-previews`` after the default run,
served on 127.0.0.1 and opened in headless Chromium. Screenshots are kept in
build/test-artifacts/. About 20 s on 2 idle cores, plus the shared default run."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from rq_kg_pipeline.pipelines.gen_llm_data.pipeline import create_pipeline as gen_llm_data
from rq_kg_pipeline.pipelines.ingestion.pipeline import create_pipeline as ingestion
from tests.pipelines.browser import ARTIFACTS, background, chromium, distinct_colours, dom_of, free_port, screenshot
from tests.pipelines.shared_run import shared_default_run

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (apt-get install -y chromium; .ci/run installs it)")

LAYERS = ["raw", "intermediate", "primary", "model_input", "models", "model_output", "reporting"]
DRAWN_LABEL = re.compile(r'class="pipeline-node__text"[^>]*>([^<]+)<')


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, build folder, project folder) of the built site, served while the module runs."""
    project = shared_default_run(tmp_path_factory)
    done = project.kedro("viz", "build", "--include-previews")
    assert done.returncode == 0, done.stderr[-3000:]
    build = project.path / "build"
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(build)]
    url = f"http://127.0.0.1:{port}/"
    with background(command, cwd=build, ready_url=url, log=project.path / "http_server.log"):
        yield url, build, project.path


def node_ids(build: Path) -> dict[str, str]:
    main = json.loads((build / "api" / "main").read_text())
    return {node["name"]: node["id"] for node in main["nodes"]}


def node_detail(build: Path, name: str) -> dict:
    return json.loads((build / "api" / "nodes" / node_ids(build)[name]).read_text())


def test_custom_datasets_give_kedro_viz_previews(site):
    _, build, project = site
    codes = node_detail(build, "entity_codes")
    assert codes["preview_type"] == "TablePreview"
    table = codes["preview"]
    assert table["columns"] == ["entity", "pos1", "pos2", "pos3", "pos4", "disambiguation"]
    assert len(table["data"]) == 10 == len(table["index"]), "catalog preview_args: nrows 10"
    codes_file = next((project / "data/07_model_output/umls/codes").glob("*_rq.pt"))
    first = torch.load(codes_file, weights_only=True)[0]  # [L, Q]
    assert table["data"][0][0] == "acquired_abnormality"
    assert table["data"][0][1:5] == ["-".join(str(int(c)) for c in position) for position in first]
    raw = node_detail(build, "raw_train")
    assert raw["preview_type"] == "TablePreview" and raw["preview"]["columns"] == ["head", "relation", "tail", "line"]
    graph = node_detail(build, "kg_graph")
    assert graph["preview_type"] == "JSONPreview"
    assert json.loads(graph["preview"]) == {"entities": 135, "relations (without inverses)": 46, "edges (with inverses)": 10432}
    model = json.loads(node_detail(build, "model_checkpoint")["preview"])
    assert model["num_entities"] == 135 and model["model_config"]["seq_len"] == 4
    assert re.fullmatch(r"\d+ tensors, [\d,]+ values", model["state_dict"])
    plot = node_detail(build, "plot_code_usage")
    assert plot["preview_type"] == "ImagePreview"
    assert base64.b64decode(plot["preview"]).startswith(b"\x89PNG")


def test_flowchart_draws_every_node_of_the_default_pipeline_in_its_layer(site):
    url, _, project = site
    dom = dom_of(url, project / "chromium-flowchart")
    drawn = set(DRAWN_LABEL.findall(dom))
    expected = {node.name for pipeline in (ingestion(), gen_llm_data()) for node in pipeline.nodes}
    expected |= {"train_model", "extract_entity_codes", "evaluate_link_prediction", "plot_codes", "entity_codes", "model_checkpoint"}
    assert expected <= drawn, sorted(expected - drawn)
    layers = re.findall(r'data-id="layer-label--([a-z_]+)"', dom)
    assert layers == LAYERS
    shot = screenshot(url, project / "chromium-flowchart-shot", ARTIFACTS / "kedro_viz_flowchart.png")
    assert distinct_colours(shot) > 100, "the screenshot shows a drawn pipeline, not a blank page"


def test_compare_pipeline_groups_its_arms_and_a_node_shows_its_preview(site):
    url, build, project = site
    compare = set(DRAWN_LABEL.findall(dom_of(f"{url}?pid=compare", project / "chromium-compare")))
    assert {"vq", "rq", "compare_arms", "comparison_report"} <= compare, "the arms are two collapsed namespaces"
    selected = f"{url}?pid=__default__&sid={node_ids(build)['entity_codes']}&sn=entity_codes"
    dom = dom_of(selected, project / "chromium-preview")
    assert "acquired_abnormality" in dom and "disambiguation" in dom, "the code table preview is shown"
    shot = screenshot(selected, project / "chromium-preview-shot", ARTIFACTS / "kedro_viz_entity_codes_preview.png")
    assert distinct_colours(shot) > 100
