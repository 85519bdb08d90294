"""Model-test fixtures: a small RQGCN for UMLS (CPU-fast sizes), one torch thread per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import torch

from rq_kg_pipeline.models.rqgcn import RQGCN

SMALL = dict(init_dim=16, gcn_dim=32, gcn_layers=2, seq_len=4, num_code=16, num_quantizers=3, tf_layers=1, att_head=4, num_filters=8, kernel_size=3)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These tensors are tiny: one thread is faster than two contending ones on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_model(umls) -> Callable[..., RQGCN]:
    def make(**overrides) -> RQGCN:
        return RQGCN(umls.num_entities, umls.num_relations, **(SMALL | overrides))

    return make


@pytest.fixture
def kernel_device() -> torch.device:
    """Where Triton kernel tests run: CUDA when present (compiled kernels), else CPU tensors through
    Triton's interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py before any kernel is defined)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def interpreted() -> None:
    """Tests of the kernels on CPU tensors: they need Triton's interpreter, which runs where there is no GPU."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs in Triton's CPU interpreter (no GPU here); the CUDA tests cover the compiled kernels")
