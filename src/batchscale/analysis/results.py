"""A study's results folder for the Python API (`batchscale.open_study`): its tables, critical_batch.json and
cube, read as the workflow's later stages read them.

Tables and documents go through `store.records` (a file changed since the analysis wrote it is refused, as
the figures and the summary refuse it); the cube through `store.cube.open_cube` (its content hash checked),
and, where the folder has an analysis record, against the cube the tables were computed from. Everything is
read on first use, so opening a study costs nothing until a table or the cube is asked for.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import pandas as pd

from batchscale.analysis.api import CriticalBatch
from batchscale.errors import StageInputError
from batchscale.spec.manifest import BRANCHING_TABLE, STUDY_TABLES, TUNED_TABLES, names
from batchscale.store.cube import open_cube
from batchscale.store.records import RECORD, RERUN, read_csv, read_json

# every CSV a study's folder can hold, by stem: speedup, speedup_common, accuracy, ..., local_critical_batch
TABLE_FILES = {Path(name).stem: name for name in names(STUDY_TABLES + TUNED_TABLES + (BRANCHING_TABLE,))
               if name.endswith(".csv")}
CRITICAL_FILE = "critical_batch.json"
CUBE_FILE = "cube.nc"


class StudyResults:
    """The results of one study (a folder results/{study}); `open_study` opens one.

    Attributes:
      folder: the folder.
      name: the study's name (the folder's).
    """

    def __init__(self, folder):
        self.folder = Path(folder).absolute()  # a later chdir (in a notebook) changes nothing
        self.name = self.folder.name

    def __repr__(self) -> str:
        return f"StudyResults({str(self.folder)!r}: tables {', '.join(self.table_names) or 'none'})"

    @property
    def table_names(self) -> list[str]:
        """The stems of the tables present (speedup, speedup_common, accuracy, ...)."""
        return [stem for stem, name in TABLE_FILES.items() if (self.folder / name).exists()]

    def table(self, stem: str) -> pd.DataFrame:
        """One table as a DataFrame (inf: never reached; empty cells: NaN).

        Args:
          stem: the file's name without .csv: speedup, speedup_common, accuracy, linear_error, noise_scale,
            noise_over_training, tuned, tuned_trials or local_critical_batch.

        Returns:
          the table, checked against the folder's analysis record.

        Raises:
          KeyError: for a name that is not a table; StageInputError: for a table missing or changed since.
        """
        if stem not in TABLE_FILES:
            raise KeyError(f"{stem!r} is not a study table; the tables are {', '.join(TABLE_FILES)}")
        path = self.folder / TABLE_FILES[stem]
        if not path.exists():
            raise StageInputError(f"{path}: no such table in {self.folder} (present: "
                                  f"{', '.join(self.table_names) or 'none'})")
        return self.tables[stem]

    @cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        """{stem: DataFrame} of every table present (read once, on first use)."""
        return {stem: read_csv(self.folder / TABLE_FILES[stem]) for stem in self.table_names}

    @property
    def speedup(self) -> pd.DataFrame:
        """speedup.csv: each strategy at its own threshold (columns in `batchscale.analysis.study`)."""
        return self.table("speedup")

    @property
    def speedup_common(self) -> pd.DataFrame:
        """speedup_common.csv: every strategy at the metric's common threshold."""
        return self.table("speedup_common")

    @cached_property
    def critical_batch(self) -> dict:
        """critical_batch.json as a dict (layout in `batchscale.analysis.study`; null as None)."""
        return read_json(self.folder / CRITICAL_FILE)

    def critical(self, strategy: str | None = None, metric: str | None = None, common: bool = False) -> CriticalBatch:
        """One curve's critical batch size from critical_batch.json.

        Args:
          strategy: the strategy (default: the first of the document).
          metric: the metric (default: train_loss where present, else the strategy's first).
          common: the entry at the metric's common threshold instead of the strategy's own.

        Returns:
          a `CriticalBatch`.

        Raises:
          KeyError: naming what the document holds when the strategy or metric is not in it.
        """
        doc = self.critical_batch
        by_strategy = ({s: {m: e["strategies"][s] for m, e in doc.get("common", {}).items() if s in e["strategies"]}
                        for s in doc.get("strategies", {})} if common else doc.get("strategies", {}))
        if not by_strategy:
            raise KeyError(f"{self.folder / CRITICAL_FILE} holds no critical-batch entry")
        strategy = strategy if strategy is not None else next(iter(by_strategy))
        if strategy not in by_strategy:
            raise KeyError(f"strategy {strategy!r} is not in {CRITICAL_FILE} (strategies: {', '.join(by_strategy)})")
        metrics = by_strategy[strategy]
        metric = metric if metric is not None else ("train_loss" if "train_loss" in metrics else next(iter(metrics)))
        if metric not in metrics:
            raise KeyError(f"metric {metric!r} of strategy {strategy!r} is not in {CRITICAL_FILE} (metrics: "
                           f"{', '.join(metrics)})")
        return CriticalBatch.from_entry(metrics[metric])

    @cached_property
    def cube(self):
        """The study's cube (xarray Dataset: strategy x batch_size x seed x step; docs/contracts.md), loaded on
        first use and checked: its content hash, and where the folder has an analysis record, that the
        tables were computed from this cube."""
        cube = open_cube(self.folder / CUBE_FILE)
        record_path = self.folder / RECORD
        if record_path.exists():
            recorded = json.loads(record_path.read_text()).get("cube_content_sha256")
            if recorded and recorded != cube.attrs.get("content_sha256"):
                raise StageInputError(f"{self.folder / CUBE_FILE}: not the cube the tables of {self.folder} were "
                                      f"computed from ({RECORD} records another); {RERUN}")
        return cube

    @property
    def config(self) -> dict:
        """The study's resolved config, as recorded in its cube."""
        return json.loads(self.cube.attrs["study_config_json"])


def open_study(folder) -> StudyResults:
    """Opens a study's results folder (results/{study}, or the folder `batchscale analyze` wrote).

    Nothing is read until used; every file is read as the workflow reads it (a table changed since the
    analysis wrote it, or a cube edited or not the tables' own, is refused with a one-line error).

    Args:
      folder: the folder.

    Returns:
      a `StudyResults`: ``.speedup``, ``.speedup_common``, ``.table(stem)``, ``.tables``, ``.critical_batch``
      (the JSON), ``.critical(strategy, metric, common)`` (a `CriticalBatch`), ``.cube`` and ``.config``.

    Raises:
      StageInputError: when the folder holds neither critical_batch.json nor cube.nc.
    """
    study = StudyResults(folder)
    if not ((study.folder / CRITICAL_FILE).exists() or (study.folder / CUBE_FILE).exists()):
        raise StageInputError(f"{study.folder}: not a study's results folder (no {CRITICAL_FILE} or {CUBE_FILE}); "
                              "give results/<study> after a run, or the --out folder of `batchscale analyze`")
    return study
