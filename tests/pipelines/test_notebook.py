"""notebooks/explore_codes.ipynb executed (nbclient, kernel python3) against the default run, so
it never rots; the committed file carries no outputs. About 15 s on 2 idle cores, plus the shared
default run."""

from __future__ import annotations

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import PROJECT_ROOT
from tests.pipelines.shared_run import shared_default_run

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore_codes.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook after running in the default run's project folder (its working directory)."""
    project = shared_default_run(tmp_path_factory)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")  # inherited by the kernel
    client = NotebookClient(notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(project.path)}})
    client.execute()
    return notebook


def outputs_of(notebook, marker: str) -> list:
    """Outputs of the code cell whose source contains ``marker``."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code" and marker in cell.source]
    assert len(cells) == 1, marker
    return cells[0].outputs


def text(outputs: list) -> str:
    """The plain text a cell showed (printed and displayed), without terminal colour codes
    (kedro.ipython renders reprs with rich)."""
    parts = [o.get("text", "") for o in outputs if o.output_type == "stream"]
    parts += [o.get("data", {}).get("text/plain", "") for o in outputs if o.output_type in ("display_data", "execute_result")]
    return ANSI.sub("", "\n".join(parts))


def test_notebook_shows_codes_usage_neighbours_and_a_prompt(executed):
    assert "umls: 135 entities x 4 positions x 2 levels, 64 codes per level" in text(outputs_of(executed, 'catalog.load("entity_codes")'))
    assert "unique_code_rate" in text(outputs_of(executed, 'catalog.load("code_statistics")'))
    usage = outputs_of(executed, "plot_code_usage(")
    assert any("image/png" in o.get("data", {}) for o in usage), "the per-level usage plot is drawn"
    assert "level 2" in text(usage)
    assert "acquired_abnormality" in text(outputs_of(executed, "entities.head("))
    neighbours = text(outputs_of(executed, "nearest_by_code("))
    assert neighbours.count("shared slots") == 3 and "/ 8" in neighbours, "3 entities, overlap out of L x Q = 8 slots"
    prompt = text(outputs_of(executed, 'catalog.load("link_prediction_test_jsonl")'))
    assert "link-prediction test records" in prompt and "--- completion ---" in prompt and "[C1_" in prompt
