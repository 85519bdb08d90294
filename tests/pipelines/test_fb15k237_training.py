"""FB15k-237 through `kedro run --env fb15k237` on CPU: a small model, a few epochs, real data.

The seed's full recipe wants a GPU (docs/benchmarks.md); here the same pipeline with a
scaled-down model must learn: the loss falls, codes-only valid MRR ends far above a random
model's (about 0.0006 for filtered ranking over 14,541 entities), every quantizer level
reports its utilisation and perplexity, and the evaluation pipeline ranks all test triples
from codes. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import json

import pandas as pd

from tests.pipelines.project import ScratchProject

SMALL_MODEL = {
    "training.model.init_dim": 32,
    "training.model.gcn_dim": 32,
    "training.model.k_h": 4,
    "training.model.k_w": 8,
    "training.model.num_filters": 8,
    "training.model.kernel_size": 3,
    "training.model.seq_len": 4,
    "training.model.num_code": 256,
    "training.model.num_quantizers": 2,
    "training.fit.epochs": 2,
    "training.fit.batch_size": 1024,
    "training.fit.lr": 0.01,
    "training.fit.semantic_weight": 0,  # embedding 14,541 names costs minutes; tests/semantics covers the term
    "training.fit.eval_every": 1,
    "training.fit.device": "cpu",
}


def test_short_cpu_training_on_fb15k237_learns(tmp_path, fb15k237_dir):
    project = ScratchProject.create(tmp_path)
    overrides = ",".join(f"{key}={value}" for key, value in SMALL_MODEL.items())
    done = project.run(
        "--env=fb15k237",
        "--pipelines=ingestion,training,extraction,evaluation",
        f"--params={overrides}",
        env={"RQKG_KG_DIR": str(fb15k237_dir)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    history = pd.read_csv(project.path / "data/08_reporting/FB15k-237/training_history.csv")
    assert len(history) == 2
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    random_mrr = 0.0006
    assert history["valid_mrr"].iloc[-1] > 15 * random_mrr, history["valid_mrr"].tolist()
    for level in (1, 2):
        assert history[f"utilisation_l{level}"].between(0.05, 1.0).all()
        assert (history[f"perplexity_l{level}"] > 1).all()
    # codes-only ranking over all 20,466 test triples (both directions), in bounded batches
    report = json.loads((project.path / "data/08_reporting/FB15k-237/link_prediction.json").read_text())["metrics"]
    assert report["codes_only/test/mrr"] > 10 * report["shuffled_codes/test/mrr"]
    assert report["codes_only/test/mr"] < 14541 / 2
