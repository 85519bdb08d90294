"""Nothing half-written: every dataset the catalog writes goes through a temporary file + rename.

Three kinds of proof: (1) the catalog uses only writers known to be atomic; (2) each of those
writers, crashed just before the rename (``os.replace`` fails) or by its own data mid-write,
leaves the previous file byte for byte and no temporary file, where kedro-datasets' own class
(the control) damages it; (3) the large writers (JSONL, codes) are killed by the kernel in the
middle of a write (RLIMIT_FSIZE with SIGXFSZ at its default action: no Python cleanup runs) and
the previous artifact is still what loads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DatasetError, MemoryDataset
from kedro.io.core import parse_dataset_definition
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset, ParquetDataset
from kedro_mlflow.io.artifacts import MlflowArtifactDataset
from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset

from rq_kg_pipeline.codes.entity_codes import EntityCodes
from rq_kg_pipeline.datasets import (
    DGLGraphDataset,
    EntityCodesDataset,
    JSONLinesDataset,
    KGGraphDataset,
    KGTableDataset,
    TorchTensorDataset,
)
from rq_kg_pipeline.datasets.atomic import (
    AtomicCSVDataset,
    AtomicJSONDataset,
    AtomicMatplotlibDataset,
    AtomicParquetDataset,
    AtomicSaveMixin,
    AtomicTextDataset,
)
from rq_kg_pipeline.kg.graph import build_graph
from tests.conftest import PROJECT_ROOT

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Writers whose save goes through io.atomic.atomic_path (each is crash-tested below).
ATOMIC_WRITERS = (AtomicSaveMixin, TorchTensorDataset, DGLGraphDataset, EntityCodesDataset, JSONLinesDataset)
# Datasets that write no file: memory, MLflow metrics (the tracking store), read-only raw input.
NO_FILE_WRITTEN = (MemoryDataset, MlflowMetricsHistoryDataset, KGTableDataset)


def catalog_entries() -> list[tuple[str, str, dict]]:
    """(catalog file, entry name, dataset config) of every catalog in every environment."""
    entries = []
    for path in sorted((PROJECT_ROOT / "conf").glob("*/catalog*.yml")):
        for name, config in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(config, dict) and "type" in config:
                entries.append((path.relative_to(PROJECT_ROOT).as_posix(), name, config))
    return entries


def dataset_class(config: dict) -> type:
    return parse_dataset_definition({"type": config["type"]})[0]


def test_every_catalog_writer_is_atomic() -> None:
    entries = catalog_entries()
    assert len(entries) > 20
    offenders = []
    for source, name, config in entries:
        cls = dataset_class(config)
        if issubclass(cls, MlflowArtifactDataset):  # logs what its inner dataset wrote
            cls = dataset_class(config["dataset"])
        if not issubclass(cls, ATOMIC_WRITERS + NO_FILE_WRITTEN):
            offenders.append(f"{source}: {name} ({cls.__module__}.{cls.__qualname__})")
    assert offenders == [], "datasets that write in place:\n" + "\n".join(offenders)


def figure(value: float):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, value])
    return fig


def codes_bundle(value: int, entities: int = 30) -> EntityCodes:
    codes = torch.full((entities, 4, 2), value, dtype=torch.long)  # [M, L, Q]
    return EntityCodes(codes, torch.full((entities, 4, 8), float(value)), torch.zeros(entities, dtype=torch.long), 16, "toy")


def dgl_graphs() -> tuple:
    from rq_kg_pipeline.kg.dgl_import import to_dgl

    return tuple(to_dgl(build_graph(torch.tensor(t), 3, 1)) for t in ([[0, 0, 1]], [[0, 0, 1], [1, 0, 2]]))


# kind -> (dataset in a folder, () -> (first value, second value)): one row per writer the catalog uses
WRITERS = {
    "parquet": (lambda d: AtomicParquetDataset(filepath=str(d / "t.parquet")), lambda: (pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]}))),
    "csv": (lambda d: AtomicCSVDataset(filepath=str(d / "t.csv")), lambda: (pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]}))),
    "json": (lambda d: AtomicJSONDataset(filepath=str(d / "t.json")), lambda: ({"a": 1}, {"a": 2})),
    "text": (lambda d: AtomicTextDataset(filepath=str(d / "t.md")), lambda: ("first", "second")),
    "plot": (lambda d: AtomicMatplotlibDataset(filepath=str(d / "t.png")), lambda: (figure(1.0), figure(-1.0))),
    "tensor": (lambda d: TorchTensorDataset(filepath=str(d / "t.pt")), lambda: (torch.zeros(3), torch.ones(5))),
    "kg_graph": (
        lambda d: KGGraphDataset(filepath=str(d / "g.pt")),
        lambda: (build_graph(torch.tensor([[0, 0, 1]]), 2, 1), build_graph(torch.tensor([[0, 0, 1], [1, 0, 2]]), 3, 1)),
    ),
    "dgl_graph": (lambda d: DGLGraphDataset(filepath=str(d / "g.dgl")), dgl_graphs),
    "jsonl": (lambda d: JSONLinesDataset(filepath=str(d / "t.jsonl")), lambda: ([{"i": 1}], [{"i": 2}, {"i": 3}])),
    "codes": (lambda d: EntityCodesDataset(path=str(d / "codes")), lambda: (codes_bundle(1), codes_bundle(2))),
    # control: kedro-datasets' own class writes in place, so the same crash does not protect it
    "plain_parquet_control": (lambda d: ParquetDataset(filepath=str(d / "t.parquet")), lambda: (pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]}))),
}  # fmt: skip


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_crash_before_rename_leaves_the_previous_artifact(tmp_path, monkeypatch, kind) -> None:
    factory, values = WRITERS[kind]
    first, second = values()
    dataset = factory(tmp_path)
    dataset.save(first)
    before = snapshot(tmp_path)
    assert before

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    if kind == "plain_parquet_control":
        dataset.save(second)  # no rename involved: the target itself was rewritten
        assert snapshot(tmp_path) != before
        return
    with pytest.raises(Exception, match="simulated crash"):
        dataset.save(second)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before, "the previous artifact must be untouched"
    if kind != "plot":  # MatplotlibDataset cannot load
        factory(tmp_path).load()  # and still loads


def test_what_one_rename_cannot_cover_is_refused(tmp_path) -> None:
    with pytest.raises(DatasetError, match="one figure per file, got a list"):
        AtomicMatplotlibDataset(filepath=str(tmp_path / "plots")).save([figure(1.0), figure(2.0)])
    with pytest.raises(DatasetError, match="writes local files only .* 'memory'"):
        AtomicJSONDataset(filepath="memory://report.json").save({"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("atomic", "plain", "good", "bad"),
    [
        # pyarrow refuses a column of mixed types, json.dump an object, to_csv a value that cannot print
        (AtomicParquetDataset, ParquetDataset, pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [1, "a"]})),
        (AtomicJSONDataset, JSONDataset, {"a": [1, 2]}, {"a": list(range(2000)), "b": object()}),
        (AtomicCSVDataset, CSVDataset, pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [1, type("Bad", (), {"__str__": lambda s: 1 / 0})()]})),
    ],
)
def test_save_failing_mid_write_keeps_the_previous_file(tmp_path, atomic, plain, good, bad) -> None:
    target = tmp_path / "artifact"
    atomic(filepath=str(target)).save(good)
    before = target.read_bytes()
    with pytest.raises(Exception):
        atomic(filepath=str(target)).save(bad)
    assert target.read_bytes() == before and snapshot(tmp_path) == {"artifact": before}
    # control: kedro-datasets' own class truncates the target before the data fails
    with pytest.raises(Exception):
        plain(filepath=str(target)).save(bad)
    assert target.read_bytes() != before


def test_jsonl_iterator_failing_mid_write_keeps_the_previous_file(tmp_path) -> None:
    dataset = JSONLinesDataset(filepath=str(tmp_path / "train.jsonl"))
    dataset.save({"i": i} for i in range(10))
    before = snapshot(tmp_path)

    def records():
        for i in range(100_000):
            if i == 5_000:
                raise RuntimeError("generator failed mid-write")
            yield {"i": i, "prompt": "x" * 50}

    with pytest.raises(Exception, match="generator failed mid-write"):  # kedro wraps it in a DatasetError
        dataset.save(records())
    assert snapshot(tmp_path) == before
    assert [r["i"] for r in dataset.load()] == list(range(10))


KILLED_WRITER = textwrap.dedent(
    """
    import resource, signal, sys
    import torch
    from rq_kg_pipeline.codes.entity_codes import EntityCodes
    from rq_kg_pipeline.datasets import EntityCodesDataset, JSONLinesDataset
    kind, target, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    bundle = EntityCodes(
        torch.full((5_000, 4, 2), 2, dtype=torch.long), torch.full((5_000, 4, 8), 2.0),
        torch.zeros(5_000, dtype=torch.long), 16, "toy",
    )  # codes_bundle(2, entities=5_000)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; default: the kernel kills the writer
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    if kind == "jsonl":
        JSONLinesDataset(filepath=target).save({"i": i, "prompt": "y" * 100} for i in range(50_000))
    else:
        EntityCodesDataset(path=target).save(bundle)
    print("finished without being killed")
    """
)


def kill_mid_write(kind: str, target: Path, limit: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, kind, str(target), str(limit)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_jsonl_writer_killed_mid_write_leaves_the_previous_file(tmp_path) -> None:
    target = tmp_path / "link_prediction_train.jsonl"
    JSONLinesDataset(filepath=str(target)).save({"i": i} for i in range(3))
    before = target.read_bytes()
    done = kill_mid_write("jsonl", target, limit=64 * 1024)
    assert done.returncode == -signal.SIGXFSZ, done.stdout + done.stderr[-2000:]
    assert target.read_bytes() == before
    partial = [p for p in tmp_path.iterdir() if p != target]
    assert len(partial) == 1 and partial[0].name.endswith(".tmp") and partial[0].stat().st_size == 64 * 1024
    assert [r["i"] for r in JSONLinesDataset(filepath=str(target)).load()] == [0, 1, 2]


def killed_codes_save(tmp_path: Path, file_key: str) -> tuple[Path, dict[str, bytes], int]:
    """Old codes saved, then a save of other codes killed halfway through writing ``file_key``."""
    folder = tmp_path / "codes"
    old = codes_bundle(1, entities=5_000)
    EntityCodesDataset(path=str(folder)).save(old)
    before = snapshot(folder)
    limit = len(before[old.sidecar()["files"][file_key]]) // 2
    done = kill_mid_write("codes", folder, limit)
    assert done.returncode == -signal.SIGXFSZ, done.stdout + done.stderr[-2000:]
    return folder, before, limit


def test_codes_writer_killed_mid_write_leaves_the_previous_codes(tmp_path) -> None:
    folder, before, limit = killed_codes_save(tmp_path, "codes")  # the first file written
    after = snapshot(folder)
    leftovers = [name for name in after if name not in before]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp") and len(after[leftovers[0]]) == limit
    assert {name: after[name] for name in before} == before
    loaded = EntityCodesDataset(path=str(folder)).load()
    assert torch.equal(loaded.codes, codes_bundle(1, entities=5_000).codes)


def test_codes_folder_killed_between_its_files_loads_old_codes_or_refuses(tmp_path) -> None:
    folder, before, _ = killed_codes_save(tmp_path, "embeddings")  # the second file written
    # The new codes file sits beside the old sidecar: its hash no longer matches, so loading refuses.
    with pytest.raises(DatasetError, match="does not match the sidecar"):
        EntityCodesDataset(path=str(folder)).load()
