"""What ``kedro run`` prints: one summary line per pipeline stage, and no warning raised by this
project's own code. Reads the shared default run's log (no run of its own)."""

from __future__ import annotations

import re

import pytest

from tests.pipelines.shared_run import LOG_NAME, shared_default_run


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> str:
    return (shared_default_run(tmp_path_factory).path / LOG_NAME).read_text(encoding="utf-8")


def test_one_summary_line_per_stage(log):
    patterns = [
        r"ingestion: 135 entities, 46 relations, 5,216 / 652 / 661 train/valid/test triples -> data/05_model_input/umls/kg_graph\.pt",
        r"training: Q 2, K 64, L 4: best valid MRR 0\.\d{3} \(codes only\) at epoch \d+, \d+ s of training -> data/06_models/umls/rqgcn\.pt",
        r"extraction: 135 entities x 4 x 2 codes \(K 64\), unique codes [\d.]+ %, codebook use per level \d+ / \d+ % -> data/07_model_output/umls/codes/umls_4_64_2_rq\.pt",
        r"evaluation: codes-only test MRR 0\.\d{3}, Hits@10 [01]\.\d{3} \(continuous 0\.\d{3}, shuffled codes 0\.\d{3}\) -> data/08_reporting/umls/link_prediction\.json",
        r"gen_llm_data: [\d,]+ link-prediction, [\d,]+ triple-classification records -> data/07_model_output/umls/llm_data",
        r"run: \d+ nodes in [\d,.]+ s, peak RSS [\d,]+ MB",
    ]
    for pattern in patterns:
        assert len(re.findall(pattern, log)) == 1, pattern


def test_no_warning_comes_from_this_project(log):
    """Python warnings raised inside installed libraries (site-packages) are theirs; any other
    WARNING line (a warning raised in src/, a logged warning) points at this project's code."""
    warnings = [line for line in log.splitlines() if re.search(r"\bWARNING\b", line)]
    ours = [line.strip()[:300] for line in warnings if "site-packages" not in line]
    assert not ours, "\n".join(ours)
