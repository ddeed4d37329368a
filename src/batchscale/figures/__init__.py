"""Figures of a batch-size study (Golmant et al. 2018, Figs. 1-5) and of comparisons between studies.

Every number a figure shows (thresholds, k, speedups and their intervals, regimes, fits, critical batch
sizes, accuracies, linear approximation errors) is read from the files the analysis wrote (speedup.csv,
speedup_common.csv, critical_batch.json, accuracy.csv, linear_error.csv, a comparison's speedup.csv);
the cube is read only for the raw traces that contours and loss curves draw. No module of this package
fits, bootstraps or sets a threshold (tests/test_figures.py checks the imports).

One module per figure, each with small ``plot_*(ax, rows)`` / ``*_figure(tables)`` functions that draw the
numbers they are given:

- `contours` -- ``fig1_train_loss_contours``, ``fig5_test_loss_contours``: log10 of the loss (seed mean)
  over batch size and iterations, the eps level curve and the tables' k(m) on it.
- `speedup` -- ``fig2_speedup``: speedup per strategy at its own eps with regimes and interval bars, and an
  overlay of every strategy at the common eps.
- `accuracy_error` -- ``fig2_accuracy_linear_error``: final test and train accuracy and the most
  informative linear approximation error available.
- `steps_examples` -- ``steps_vs_examples``: S = k(m) against E = m S with the fit where meaningful.
- `loss_curves` -- ``loss_curves``: loss against iterations per batch size, eps drawn.
- `noise` -- ``noise_scale``: B_simple over training (noise_over_training.csv) with the critical batch band
  (noise_scale.csv); ``local_critical_batch`` of a branching study (local_critical_batch.csv).
- `comparison` -- a comparison's ``speedup``: studies at their own eps and at a common eps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from batchscale.figures.accuracy_error import accuracy_error_figure
from batchscale.figures.base import _study_title, message_figure, save_figure
from batchscale.figures.comparison import comparison_figure
from batchscale.figures.contours import contour_figure
from batchscale.figures.loss_curves import loss_curves_figure
from batchscale.figures.noise import noise_scale_figure
from batchscale.figures.speedup import speedup_figure
from batchscale.figures.steps_examples import fits_from_critical, steps_examples_figure

STUDY_FIGURES = (
    "fig1_train_loss_contours",
    "fig5_test_loss_contours",
    "fig2_speedup",
    "fig2_accuracy_linear_error",
    "steps_vs_examples",
    "loss_curves",
    "noise_scale",
)


def read_study_tables(tables_dir) -> dict:
    """The analysis files of a study folder: {speedup, speedup_common, accuracy, linear_error: DataFrame or
    None, critical_batch: dict}."""
    folder = Path(tables_dir)
    out = {}
    for stem in ("speedup", "speedup_common", "accuracy", "linear_error", "noise_scale", "noise_over_training"):
        path = folder / f"{stem}.csv"
        out[stem] = pd.read_csv(path) if path.exists() else None
    path = folder / "critical_batch.json"
    out["critical_batch"] = json.loads(path.read_text()) if path.exists() else {}
    return out


def _metric_for_fit(table: pd.DataFrame) -> str:
    metrics = list(dict.fromkeys(table["metric"].astype(str)))
    return "train_loss" if "train_loss" in metrics else metrics[0]


def study_figures(cube, study_config: dict | None, tables: dict) -> dict:
    """The study's figures, {name: Figure}, in the order of `STUDY_FIGURES`, from its cube (raw traces) and
    its analysis `tables` (`read_study_tables`)."""
    config = study_config if study_config is not None else json.loads(cube.attrs.get("study_config_json", "{}"))
    name = _study_title(cube, config)
    table = tables["speedup"]
    strategies = [str(s) for s in cube["strategy"].values]
    metrics = set(table["metric"].astype(str))
    figures = {}
    figures["fig1_train_loss_contours"] = (contour_figure(cube, "train_loss", table, study=name)
                                           if "train_loss" in metrics else message_figure(name, "no train loss"))
    if "test_loss" in cube and "test_loss" in metrics:
        pair = [s for s in ("blr", "lsr") if s in strategies] or strategies[:1]
        figures["fig5_test_loss_contours"] = contour_figure(cube, "test_loss", table, strategies=pair, study=name)
    else:
        figures["fig5_test_loss_contours"] = message_figure(name, "the cube has no test_loss")
    figures["fig2_speedup"] = speedup_figure(table, tables.get("speedup_common"), study=name)
    figures["fig2_accuracy_linear_error"] = accuracy_error_figure(tables.get("accuracy"), tables.get("linear_error"),
                                                                  study=name)
    metric = _metric_for_fit(table)
    fits = fits_from_critical(tables.get("critical_batch") or {}, metric)
    figures["steps_vs_examples"] = steps_examples_figure(table, fits, metric=metric, study=name)
    figures["loss_curves"] = (loss_curves_figure(cube, table, study=name) if "train_loss" in metrics
                              else message_figure(name, "no train loss"))
    figures["noise_scale"] = noise_scale_figure(tables.get("noise_over_training"), tables.get("noise_scale"), name)
    return figures


def draw_study_figures(cube_path, study_config: dict, out_dir, tables_dir) -> list[Path]:
    """Draw every figure of `STUDY_FIGURES` for a study cube and the analysis files in `tables_dir` into
    `out_dir` (``{name}.png`` and ``{name}.svg``); returns the written paths."""
    from batchscale.store.cube import open_cube

    cube = open_cube(cube_path)
    paths = []
    for name, fig in study_figures(cube, study_config, read_study_tables(tables_dir)).items():
        paths += save_figure(fig, out_dir, name)
    return paths


def draw_comparison(table_path, spec: dict, out_dir, name: str) -> list[Path]:
    """Draw a comparison's ``speedup.png``/``.svg`` from its table (batchscale.analysis.comparison)."""
    table = pd.read_csv(table_path)
    title = spec.get("title") or name
    return save_figure(comparison_figure(table, title=title), out_dir, "speedup")


def draw_external_figures(result: dict, out_dir) -> list[Path]:
    """`figure_hook` of `batchscale.analysis.external.analyze_external`: ``speedup`` and
    ``steps_vs_examples`` (.png and .svg) for the external table, into `out_dir`."""
    table = result["speedup"]
    metric = _metric_for_fit(table)
    source = Path(str(result.get("critical_batch", {}).get("source", "external CSV"))).name
    name = f"external sweep ({source})"
    paths = save_figure(speedup_figure(table, result.get("speedup_common"), metrics=[metric], study=name), out_dir,
                        "speedup")
    fits = fits_from_critical(result.get("critical_batch", {}), metric)
    paths += save_figure(steps_examples_figure(table, fits, metric=metric, study=name), out_dir,
                         "steps_vs_examples")
    return paths
