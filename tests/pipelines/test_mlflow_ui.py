"""The MLflow UI a user opens after ``kedro run``: ``mlflow server`` on 127.0.0.1 over the run's
tracking database, queried through its REST API; the logged model loaded and run on codes; the
run page opened in headless Chromium. About 40 s on 2 idle cores (server start-up, model load),
plus the shared default run."""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request

import mlflow
import mlflow.pytorch
import pandas as pd
import pytest
import torch

from rq_kg_pipeline.models.persistence import load_model
from tests.pipelines.browser import ARTIFACTS, background, chromium, distinct_colours, dom_of, free_port, screenshot
from tests.pipelines.shared_run import shared_default_run

KG = "umls"
NODES = ("index_triples", "build_training_graph", "train_model", "extract_entity_codes", "evaluate_link_prediction", "write_dataset_card")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, project folder) of ``mlflow server`` over the default run's mlflow.db."""
    project = shared_default_run(tmp_path_factory)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [shutil.which("mlflow") or "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{project.path / 'mlflow.db'}", "--workers", "1"]
    with background(command, cwd=project.path, ready_url=f"{url}/health", log=project.path / "mlflow_server.log", timeout=180):
        yield url, project.path


def api(url: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    """One MLflow REST call (POST with a JSON body, else GET with query parameters)."""
    address = f"{url}/api/2.0/mlflow/{endpoint}"
    if body is None:
        request = urllib.request.Request(f"{address}?{urllib.parse.urlencode(query)}")
    else:
        request = urllib.request.Request(address, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def last_run(server) -> dict:
    url, _ = server
    experiment = api(url, "experiments/get-by-name", experiment_name="rq_kg_pipeline")["experiment"]
    body = {"experiment_ids": [experiment["experiment_id"]], "max_results": 1, "order_by": ["attributes.start_time DESC"]}
    return api(url, "runs/search", body)["runs"][0]


def test_run_is_named_and_tagged(last_run):
    assert last_run["info"]["run_name"] == f"{KG} Q2 K64 L4", "dataset, quantizers, codes per level, positions"
    tags = {t["key"]: t["value"] for t in last_run["data"]["tags"]}
    expected = {"dataset": KG, "num_quantizers": "2", "num_code": "64", "seq_len": "4", "backend": "native", "device": "cpu"}
    assert expected.items() <= tags.items()
    assert len(tags["git_commit"].removesuffix("-dirty")) in (40, len("unknown"))


def test_params_are_flat_leaves(last_run):
    params = {p["key"]: p["value"] for p in last_run["data"]["params"]}
    assert params["training.model.num_quantizers"] == "auto" and params["training.fit.lr"] == "0.003"
    assert params["gen_llm_data.negatives_per_positive.train"] == "16"
    groups = {key.rsplit(".", 1)[0] for key in params if "." in key}
    assert not groups & params.keys(), f"no opaque string per parameter block: {sorted(groups & params.keys())}"


def test_metrics_per_epoch_and_cost_per_node(server, last_run):
    url, project = server
    run_id = last_run["info"]["run_id"]
    history = api(url, "metrics/get-history", run_id=run_id, metric_key="train.loss")["metrics"]
    epochs = pd.read_csv(project / f"data/08_reporting/{KG}/training_history.csv")
    assert [m["step"] for m in history] == epochs["epoch"].astype(int).tolist()
    metrics = {m["key"]: m["value"] for m in last_run["data"]["metrics"]}
    for name in ("train.epoch_seconds", "train.valid_mrr", "train.quant_loss_l2", "eval.codes_only.test.mrr", "run_seconds", "peak_rss_mb"):
        assert name in metrics, name
    for node in NODES:
        assert metrics[f"node_seconds.{node}"] >= 0
        assert 50 < metrics[f"peak_rss_mb.{node}"] <= metrics["peak_rss_mb"], "a process high-water mark, in MB"
    assert metrics["node_seconds.train_model"] > metrics["node_seconds.summarise_kg"]
    assert sum(v for k, v in metrics.items() if k.startswith("node_seconds.")) <= metrics["run_seconds"]


def test_reports_plots_and_model_are_artifacts(server, last_run):
    url, _ = server
    run_id = last_run["info"]["run_id"]
    listed = lambda path: {f["path"] for f in api(url, "artifacts/list", run_id=run_id, path=path).get("files", [])}  # noqa: E731
    assert {"model", "plots", "reports", "llm_data"} <= listed("")
    assert {f"plots/{name}.png" for name in ("level_losses", "code_usage", "reconstruction", "code_projection")} <= listed("plots")
    assert {"reports/link_prediction.json", "reports/code_statistics.json", "reports/training_history.csv"} <= listed("reports")
    models = api(url, "logged-models/search", {"experiment_ids": [last_run["info"]["experiment_id"]]})["models"]
    assert [(m["info"]["name"], m["info"]["source_run_id"]) for m in models] == [("code_decoder", run_id)]


def test_logged_model_loads_with_mlflow_and_decodes_codes(server, last_run):
    url, project = server
    uri = f"runs:/{last_run['info']['run_id']}/code_decoder"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)  # through the server, as a user of the UI would
    try:
        decoder = mlflow.pytorch.load_model(uri)
        signature = mlflow.models.get_model_info(uri).signature
    finally:
        mlflow.set_tracking_uri(previous)
    spec = signature.inputs.to_dict()[0]["tensor-spec"]
    assert spec["dtype"] == "int64" and list(spec["shape"]) == [-1, 4, 2], "codes [N, L, Q]"
    codes = torch.load(next((project / f"data/07_model_output/{KG}/codes").glob("*_rq.pt")), weights_only=True).long()  # [M, L, Q]
    model = load_model(torch.load(project / f"data/06_models/{KG}/rqgcn.pt", weights_only=True), device="cpu")
    with torch.no_grad():
        vectors = decoder(codes[:7])  # [7, D]
        expected = model.entity_vectors_from_codes(codes[:7])
    assert vectors.shape == (7, model.latent_dim)
    torch.testing.assert_close(vectors, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (apt-get install -y chromium; .ci/run installs it)")
def test_run_page_shows_the_run_in_a_browser(server, last_run):
    url, project = server
    page = f"{url}/#/experiments/{last_run['info']['experiment_id']}/runs/{last_run['info']['run_id']}"
    dom = dom_of(page, project / "chromium-mlflow")
    assert f"{KG} Q2 K64 L4" in dom and "node_seconds.train_model" in dom and "git_commit" in dom
    shot = screenshot(page, project / "chromium-mlflow-shot", ARTIFACTS / "mlflow_run_page.png", window="1600,1200")
    assert distinct_colours(shot) > 100
