"""``kedro run`` on the default KG end to end, then each promise of its artifacts checked.

One full run is shared by the module (about half a minute on 2 cores); tests read its outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from rq_kg_pipeline.prompts.tokens import parse_entity_codes
from tests.pipelines.project import ScratchProject

KG = "umls"
SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ScratchProject:
    project = ScratchProject.create(tmp_path_factory.mktemp("default_run"))
    done = project.run()
    assert done.returncode == 0, done.stderr[-4000:]
    return project


def out(project: ScratchProject, relative: str) -> Path:
    return project.path / "data" / relative


def sidecar(project: ScratchProject) -> dict:
    codes_dir = out(project, f"07_model_output/{KG}/codes")
    manifest = json.loads((codes_dir / "codes_manifest.json").read_text())
    return json.loads((codes_dir / manifest["current"]).read_text())


def test_code_files_have_the_seed_names_shapes_and_sidecar(project):
    meta = sidecar(project)
    q, length, k = meta["num_quantizers"], meta["seq_len"], meta["num_code"]
    assert q == 2, "auto chooses 2 quantizers for a KG of 135 entities"
    codes_dir = out(project, f"07_model_output/{KG}/codes")
    codes = torch.load(codes_dir / f"{KG}_{length}_{k}_{q}_rq.pt", weights_only=True)
    emds = torch.load(codes_dir / f"{KG}_{length}_{k}_{q}_rq_emd.pt", weights_only=True)
    assert codes.shape == (135, length, q) and codes.dtype == torch.uint8  # K = 64 fits in a byte
    assert emds.shape == (135, length, meta["embeddings_shape"][2]) and emds.dtype == torch.float32
    assert meta["codes_shape"] == list(codes.shape)
    vocab = pd.read_parquet(out(project, f"02_intermediate/{KG}/entity_vocab.parquet"))
    assert meta["entities"] == vocab.sort_values("id")["label"].tolist()
    assert len(meta["checkpoint_sha256"]) == 64
    # every entity maps to exactly one (code sequence, disambiguation index) and back
    keys = {(tuple(codes[e].flatten().tolist()), meta["disambiguation"][e]) for e in range(135)}
    assert len(keys) == 135


def test_codes_only_link_prediction_beats_shuffled_codes(project):
    report = json.loads(out(project, f"08_reporting/{KG}/link_prediction.json").read_text())["metrics"]
    assert report["codes_only/test/mrr"] > 0.3
    assert report["shuffled_codes/test/mrr"] < 0.15
    assert report["codes_only/test/mrr"] > 3 * report["shuffled_codes/test/mrr"]
    assert report["continuous/test/mrr"] > 0.3
    for key in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
        assert f"codes_only/valid/{key}" in report


def test_mlflow_run_has_params_per_epoch_metrics_and_artifacts(project):
    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["rq_kg_pipeline"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["dataset"] == KG and run.data.tags["num_quantizers"] == "2"
    params = run.data.params  # flat and readable, one per leaf
    assert params["training.model.num_quantizers"] == "auto" and params["training.fit.lr"] == "0.003"
    assert params["ingestion.unseen_policy"] == "error" and params["gen_llm_data.negatives_per_positive.train"] == "16"
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "train.loss")
    epochs = pd.read_csv(out(project, f"08_reporting/{KG}/training_history.csv"))
    assert len(history) == len(epochs) > 1
    assert history[-1].value < history[0].value, "the loss falls"
    for name in ("train.quant_loss_l1", "train.quant_loss_l2", "train.utilisation_l2", "train.valid_mrr", "eval.codes_only.test.mrr"):
        assert name in run.data.metrics, name
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "plots", "reports", "llm_data"} <= artifacts
    llm_files = {a.path for a in client.list_artifacts(run.info.run_id, "llm_data")}
    assert "llm_data/link_prediction_test.jsonl" in llm_files and "llm_data/README.md" in llm_files


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_llm_datasets_exist_load_and_use_the_entity_codes(project):
    llm = out(project, f"07_model_output/{KG}/llm_data")
    codes = torch.load(next(out(project, f"07_model_output/{KG}/codes").glob("*_rq.pt")), weights_only=True)
    disambiguation = sidecar(project)["disambiguation"]
    vocabulary = set(json.loads((llm / "code_tokens.json").read_text()))
    for task in ("link_prediction", "triple_classification"):
        for split in SPLITS:
            frame = pd.read_json(llm / f"{task}_{split}.jsonl", lines=True)
            assert len(frame) > 0 and {"prompt", "completion", "task"} <= set(frame.columns)
            assert "messages" not in frame.columns  # record_format prompt_completion: each prompt once
    records = read_jsonl(llm / "link_prediction_test.jsonl")
    for record in records[:200]:
        answer_codes, d = parse_entity_codes(record["answer_codes"])
        assert torch.equal(answer_codes, codes[record["answer"]].long())
        assert d == disambiguation[record["answer"]]
        assert record["completion"].splitlines()[0] == f"1. {record['answer_codes']}", "true tail first"
        assert set(record["answer_codes"].split()) <= vocabulary
    assert (llm / "README.md").read_text().count("link_prediction") >= 1


def test_no_test_triple_becomes_a_train_example_and_negatives_are_unknown(project):
    ids = {s: pd.read_parquet(out(project, f"03_primary/{KG}/{s}_ids.parquet")) for s in SPLITS}
    known = {tuple(t) for s in SPLITS for t in ids[s].to_numpy().tolist()}
    test = {tuple(t) for t in ids["test"].to_numpy().tolist()}
    train_only = {tuple(t) for t in ids["train"].to_numpy().tolist()}
    llm = out(project, f"07_model_output/{KG}/llm_data")
    num_relations = len(pd.read_parquet(out(project, f"02_intermediate/{KG}/relation_vocab.parquet")))
    for record in read_jsonl(llm / "link_prediction_train.jsonl"):
        head, rel, answer = record["query"]["head"], record["query"]["relation"], record["answer"]
        triple = (answer, rel, head) if record["query"]["inverse"] else (head, rel, answer)
        assert triple in train_only
    for record in read_jsonl(llm / "triple_classification_train.jsonl"):
        h, r, t = record["triple"]
        triple = (h, r, t) if r < num_relations else (t, r - num_relations, h)
        assert (triple in known) == record["label"]
        if record["label"]:
            assert triple in train_only


def test_gen_llm_data_runs_alone_from_the_catalog(project):
    llm = out(project, f"07_model_output/{KG}/llm_data")
    before = (llm / "link_prediction_valid.jsonl").read_bytes()
    (llm / "link_prediction_valid.jsonl").unlink()
    done = project.run("--pipeline=gen_llm_data")
    assert done.returncode == 0, done.stderr[-3000:]
    ran = done.stdout + done.stderr  # kedro logs "Running node: ..." for every node it runs
    assert "Running node: rank_candidates" in ran.replace("\n", " ")
    assert "train_model" not in ran and "index_triples" not in ran and "extract_entity_codes" not in ran
    assert (llm / "link_prediction_valid.jsonl").read_bytes() == before, "same inputs, same seed, same file"
    # the writers alone, from the saved candidates, in another record format (no later test reads llm_data)
    done = project.run("--pipeline=gen_llm_data", "--tags=prompt_writing", "--params=gen_llm_data.record_format=messages")
    assert done.returncode == 0, done.stderr[-3000:]
    ran = (done.stdout + done.stderr).replace("\n", " ")
    assert "Running node: write_link_prediction_valid" in ran and "rank_candidates" not in ran
    chat = read_jsonl(llm / "link_prediction_valid.jsonl")
    plain = [json.loads(line) for line in before.decode("utf-8").splitlines()]
    assert [r["messages"] for r in chat] == [
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}] for r in plain
    ]
    assert "`messages` (a user and an assistant chat turn)" in (llm / "README.md").read_text()


def test_extraction_is_deterministic(project):
    codes_dir = out(project, f"07_model_output/{KG}/codes")
    before = {p.name: p.read_bytes() for p in codes_dir.glob("*.pt")}
    done = project.run("--pipelines=extraction")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in codes_dir.glob("*.pt")} == before


def test_compare_pipeline_runs_both_arms(project):
    done = project.run("--pipelines=compare")
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out(project, f"08_reporting/{KG}/compare/vq_vs_rq.csv")).set_index("arm")
    assert table.loc["vq", "num_quantizers"] == 1 and table.loc["rq", "num_quantizers"] == 2
    assert table.loc["vq", "tokens_per_entity"] * 2 == table.loc["rq", "tokens_per_entity"]
    assert (table["codes_only/test/mrr"] > 0.2).all()
    # plain VQ keeps the seed's VQ file names: [M, L] codes
    vq_codes = out(project, f"07_model_output/{KG}/compare/vq/codes")
    meta = json.loads((vq_codes / "codes_manifest.json").read_text())
    stem = meta["current"].removesuffix(".json")
    assert not stem.endswith("_rq") and torch.load(vq_codes / f"{stem}.pt", weights_only=True).ndim == 2
    assert (vq_codes / f"{stem}_emd.pt").is_file()
    assert "| vq | 1 |" in out(project, f"08_reporting/{KG}/compare/vq_vs_rq.md").read_text()


def test_train_candidates_do_not_depend_on_test_answers(project):
    from rq_kg_pipeline.codes.entity_codes import load_entity_codes
    from rq_kg_pipeline.datasets import KGGraphDataset
    from rq_kg_pipeline.params import GenLLMDataParams
    from rq_kg_pipeline.pipelines.gen_llm_data.nodes import rank_candidates

    model = torch.load(out(project, f"06_models/{KG}/rqgcn.pt"), weights_only=True)
    graph = KGGraphDataset(filepath=str(out(project, f"05_model_input/{KG}/kg_graph.pt"))).load()
    codes = load_entity_codes(out(project, f"07_model_output/{KG}/codes"))
    ids = {s: pd.read_parquet(out(project, f"03_primary/{KG}/{s}_ids.parquet")) for s in SPLITS}
    params = GenLLMDataParams()
    real = rank_candidates(model, graph, codes, ids["train"], ids["valid"], ids["test"], params)
    other_test = ids["valid"]  # pretend the test answers were different
    swapped = rank_candidates(model, graph, codes, ids["train"], ids["valid"], other_test, params)
    assert torch.equal(real["train"], swapped["train"])
    assert not torch.equal(real["test"], swapped["test"])
