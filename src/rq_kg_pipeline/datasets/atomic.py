"""kedro-datasets writers made atomic: the same datasets, saved to a temporary file and renamed.

kedro-datasets opens the target itself for writing, so a crash (or an exception from the data)
mid-save leaves a truncated file that the next run would load. These subclasses let the parent
write exactly as before, but into a temporary file beside the target (``io.atomic.atomic_path``),
which replaces the target only once the save has finished. Local files only: a rename is not
atomic on object stores.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import DatasetError, get_filepath_str
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset, ParquetDataset
from kedro_datasets.text import TextDataset

from rq_kg_pipeline.io.atomic import atomic_path


class AtomicSaveMixin:
    """Put before a kedro-datasets file dataset in the bases: its ``save`` then writes to a
    temporary path (via ``_get_save_path``) that is renamed over the target on success."""

    _atomic_tmp: PurePosixPath | None = None

    def save(self, data: Any) -> None:
        protocol = getattr(self, "_protocol", "file")
        if protocol != "file":
            raise DatasetError(f"{type(self).__name__} writes local files only (atomic rename), got protocol {protocol!r}")
        target = Path(get_filepath_str(super()._get_save_path(), protocol))  # type: ignore[misc]
        with atomic_path(target) as tmp:
            self._atomic_tmp = PurePosixPath(tmp.as_posix())
            try:
                super().save(data)  # type: ignore[misc]
            finally:
                self._atomic_tmp = None

    def _get_save_path(self) -> PurePosixPath:
        if self._atomic_tmp is not None:
            return self._atomic_tmp
        return super()._get_save_path()  # type: ignore[misc]


class AtomicParquetDataset(AtomicSaveMixin, ParquetDataset):
    """``pandas.ParquetDataset`` with an atomic save."""


class AtomicCSVDataset(AtomicSaveMixin, CSVDataset):
    """``pandas.CSVDataset`` with an atomic save."""


class AtomicJSONDataset(AtomicSaveMixin, JSONDataset):
    """``json.JSONDataset`` with an atomic save."""


class AtomicTextDataset(AtomicSaveMixin, TextDataset):
    """``text.TextDataset`` with an atomic save."""


class AtomicMatplotlibDataset(AtomicSaveMixin, MatplotlibDataset):
    """``matplotlib.MatplotlibDataset`` with an atomic save, for one figure per file (a list or
    dict of figures would be a folder of files, which one rename cannot replace)."""

    def save(self, data: Any) -> None:
        if isinstance(data, list | dict):
            raise DatasetError(f"{type(self).__name__} saves one figure per file, got a {type(data).__name__}")
        super().save(data)
