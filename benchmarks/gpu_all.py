"""Every GPU benchmark in one go (GPU time is scarce): training step (the recipe's CUDA graph and
compilation, then plain eager launches), its device time by stage, validation pass and extraction,
the quantizer against ResidualVQ, the Triton kernels of message passing and of the quantizer
against the routes without them, the aligned bf16 products of ConvE and scoring, and
optionally the recipe trained for --train-epochs in one fit call (800: the 10-minute target).

    python benchmarks/gpu_all.py --data ../shared/data/FB15k-237 --out /tmp/gpu [--train-epochs 800]

Each script's table is printed as it finishes and appended to OUT/gpu_benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from common import DEFAULT_DATA

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-epochs", type=int, default=0,
                        help="also train the recipe this many epochs in one fit call, early stopping off (800: the 10-minute target); 0 = skip")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = ["--data", str(args.data)]
    runs = [
        ["bench_train_step.py", *data, "--device", "cuda", "--steps", "200", "--warmup", "10"],
        ["bench_train_step.py", *data, "--device", "cuda", "--steps", "200", "--warmup", "10", "--no-cuda-graphs", "--no-compile"],
        ["bench_step_stages.py", *data, "--compile"],
        ["bench_eval.py", *data, "--device", "cuda", "--repeats", "5"],
        ["bench_quantizer.py", "--device", "cuda"],
        ["bench_message_passing.py", *data],
        ["bench_quantizer_kernels.py"],
        ["bench_aligned_gemms.py"],
    ]
    if args.train_epochs > 0:
        epochs = str(args.train_epochs)
        runs.append(["train_fb15k237.py", *data, "--out", str(args.out / "train"), "--epochs", epochs, "--chunk-epochs", epochs, "--patience", "0"])
    report = args.out / "gpu_benchmarks.md"
    failed = 0
    for run in runs:
        command = [sys.executable, str(HERE / run[0]), *run[1:]]
        result = subprocess.run(command, capture_output=True, text=True)
        text = f"\n## {' '.join(run)}\n\n{result.stdout[-6000:]}\n"
        if result.returncode:
            failed += 1
            text += f"exit {result.returncode}:\n{result.stderr[-3000:]}\n"
        print(text, flush=True)
        with report.open("a") as handle:
            handle.write(text)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
