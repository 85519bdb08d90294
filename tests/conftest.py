"""Shared fixtures: small real KGs (UMLS shipped in PyKEEN's wheel) and FB15k-237 from ../shared."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DGLBACKEND", "pytorch")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Without a GPU, Triton kernels run only in Triton's CPU interpreter, and Triton fixes the mode when
# a kernel is defined: set it before anything defines one (the kernel tests then use CPU tensors).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from rq_kg_pipeline.kg.graph import KGGraph, build_graph  # noqa: E402
from rq_kg_pipeline.kg.indexing import SPLITS, index_kg  # noqa: E402
from rq_kg_pipeline.kg.tsv import read_triples  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FB15K237_DIR = PROJECT_ROOT.parent / "shared" / "data" / "FB15k-237"


def umls_dir() -> Path:
    """UMLS as PyKEEN ships it (train/valid/test.txt): 135 entities, 46 relations."""
    import pykeen.datasets

    return Path(pykeen.datasets.__file__).parent / "umls"


@dataclass
class SmallKG:
    """A KG already indexed: what model, training and evaluation tests start from."""

    train: torch.Tensor  # [N, 3] int64
    valid: torch.Tensor
    test: torch.Tensor
    num_entities: int
    num_relations: int
    graph: KGGraph
    entity_labels: list[str]
    relation_labels: list[str]


def load_small_kg(directory: Path) -> SmallKG:
    indexed = index_kg({s: read_triples(directory / f"{s}.txt") for s in SPLITS}, unseen_policy="keep")
    ids = {s: torch.from_numpy(a) for s, a in indexed.splits.items()}
    return SmallKG(
        ids["train"],
        ids["valid"],
        ids["test"],
        indexed.num_entities,
        indexed.num_relations,
        build_graph(ids["train"], indexed.num_entities, indexed.num_relations),
        indexed.entities["label"].tolist(),
        indexed.relations["label"].tolist(),
    )


@pytest.fixture(scope="session")
def umls() -> SmallKG:
    return load_small_kg(umls_dir())


@pytest.fixture(scope="session")
def fb15k237_dir() -> Path:
    """FB15k-237 beside the checkout; CI has it, so a missing copy is a failure, not a skip."""
    if not (FB15K237_DIR / "train.txt").is_file():
        pytest.fail(f"FB15k-237 not found at {FB15K237_DIR} (tests read it from ../shared/data)")
    return FB15K237_DIR


@pytest.fixture
def single_thread():
    """One torch thread for the test (restored after): runs whose results a test compares stay
    deterministic and small tests do not fight the suite for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
