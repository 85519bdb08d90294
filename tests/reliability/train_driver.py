"""A real training run on UMLS for the kill/resume test: plain library, CPU, one thread.

``python -m tests.reliability.train_driver OUT`` trains a tiny RQ-GCN with checkpoints in
``OUT/checkpoints`` (resuming from them when present, as ``kedro run`` does), then writes the
codes of the final and of the best weights to ``OUT/codes.pt``. Two fault injections, both off
by default, make a kill land where the test wants it:

``--pause-at-step S``   the S-th training forward pass (counted over the whole run, resumed runs
                        included) prints ``PAUSED`` and sleeps, so an outside SIGKILL lands
                        inside an epoch (a forward pre-hook: the computation is untouched).
``--fsize-limit-after-epoch E``  after epoch E the process's file-size limit (RLIMIT_FSIZE) drops
                        to half of E's checkpoint, with SIGXFSZ at its default action: the kernel
                        kills the process in the middle of writing the next checkpoint, leaving
                        a partial temporary file and running no Python cleanup.
"""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import sys
import time
from pathlib import Path

import torch

from rq_kg_pipeline.evaluation.ranking import FilterIndex
from rq_kg_pipeline.io.atomic import atomic_torch_save
from rq_kg_pipeline.models.rqgcn import RQGCN
from rq_kg_pipeline.training.checkpoint import checkpoint_name
from rq_kg_pipeline.training.config import TrainConfig
from rq_kg_pipeline.training.loop import fit
from tests.conftest import load_small_kg, umls_dir

MODEL = dict(
    init_dim=16, gcn_dim=16, gcn_layers=1, seq_len=2, num_code=16, num_quantizers=2, tf_layers=1, att_head=2,
    kernel_size=3,
)
CONFIG = TrainConfig(
    epochs=6, batch_size=256, lr=0.01, eval_every=2, checkpoint_every=1, device="cpu", bf16=False, seed=5,
    eval_batch_size=512,
)  # fmt: skip


def _pause_at_step(model: torch.nn.Module, step: int) -> None:
    calls = {"n": 0}

    def hook(module: torch.nn.Module, args: tuple) -> None:
        if module.training:
            calls["n"] += 1
            if calls["n"] == step:
                print(f"PAUSED at training step {step}", flush=True)
                time.sleep(3600)

    model.register_forward_pre_hook(hook)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--pause-at-step", type=int, default=0)
    parser.add_argument("--fsize-limit-after-epoch", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    kg = load_small_kg(umls_dir())
    filter_index = FilterIndex.build([kg.train, kg.valid, kg.test], kg.num_entities, kg.num_relations)
    torch.manual_seed(CONFIG.seed)
    model = RQGCN(kg.num_entities, kg.num_relations, **MODEL)
    if args.pause_at_step:
        _pause_at_step(model, args.pause_at_step)
    checkpoints = args.out / "checkpoints"

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        print(f"EPOCH {epoch} done", flush=True)
        if epoch == args.fsize_limit_after_epoch:
            limit = (checkpoints / checkpoint_name(epoch)).stat().st_size // 2
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            print(f"FSIZE limit {limit}", flush=True)

    result = fit(
        model, kg.graph, kg.train, kg.valid, filter_index, CONFIG,
        checkpoint_dir=checkpoints, on_epoch_end=on_epoch_end, progress=False, model_config=MODEL,
    )  # fmt: skip
    final_codes = model.cal_allent_codes(kg.graph)  # [M, L, Q]
    model.load_state_dict(result.best_state_dict)
    best_codes = model.cal_allent_codes(kg.graph)  # [M, L, Q]
    atomic_torch_save(
        {"final": final_codes, "best": best_codes, "best_epoch": result.best_epoch,
         "resumed_from_epoch": -1 if result.resumed_from_epoch is None else result.resumed_from_epoch},
        args.out / "codes.pt",
    )  # fmt: skip
    print(f"DONE resumed_from={result.resumed_from_epoch} last_epoch={result.last_epoch}", flush=True)


if __name__ == "__main__":
    main()
