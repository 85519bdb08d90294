"""One read-only default ``kedro run`` shared by the test modules that only read its results
(MLflow UI, notebook, kedro-viz in a browser, the run's log), so a session pays for it once.

Tests using it must not change the project (no further ``kedro run``): test_default_run.py,
which reruns pipelines in its project, keeps its own.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.pipelines.project import ScratchProject

LOG_NAME = "kedro_run.log"  # stdout + stderr of the run, in the project folder
_shared: dict[str, tuple[ScratchProject, subprocess.CompletedProcess]] = {}


def shared_default_run(tmp_path_factory: pytest.TempPathFactory) -> ScratchProject:
    """The finished default run, started on first use (about half a minute on 2 idle cores); a
    failed run fails every later caller at once instead of running again."""
    if "run" not in _shared:
        project = ScratchProject.create(tmp_path_factory.mktemp("shared_default_run"))
        done = project.run()
        (project.path / LOG_NAME).write_text(done.stdout + "\n" + done.stderr, encoding="utf-8")
        _shared["run"] = (project, done)
    project, done = _shared["run"]
    assert done.returncode == 0, done.stderr[-4000:]
    return project
