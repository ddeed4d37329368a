"""Figures of a batch-size study (Golmant et al. 2018, Figs. 1-5) and of comparisons between studies.

Every number a figure shows (thresholds, k, speedups and their intervals, regimes, fits, critical batch
sizes, accuracies, linear approximation errors) is read from the files the analysis wrote (speedup.csv,
speedup_common.csv, critical_batch.json, accuracy.csv, linear_error.csv, a comparison's speedup.csv, ...);
the cube is read only for the raw traces that contours and loss curves draw, put on a step grid by
`batchscale.analysis.trace_grids`. No module of this package fits, bootstraps or sets a threshold
(tests/test_figures.py checks the imports).

Each figure of `STUDY_FIGURES` and `TUNED_FIGURES` (batchscale.spec.manifest, the one list of them) is drawn
by the function its module registers under the figure's name (`registry.figure`); every module here is
imported below, so a new figure is its module, its manifest entry and its report caption. The modules
draw with small ``plot_*(ax, rows)`` functions given the numbers to draw:

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
- `tuned` -- ``tuned_steps_to_result``, ``tuned_eta_star``, ``tuned_trials`` of a tuned search.
- `comparison` -- a comparison's ``speedup``: studies at their own eps and at a common eps.
- `theory_check` -- ``theory_lsr_breakdown`` of a least-squares study.
- `critical_threshold` -- ``critical_vs_threshold``: B_crit and the overhead-based critical batch across a
  family of eps (critical_vs_threshold.csv; a message where the analysis did not write it).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import pandas as pd

from batchscale.report.figures.base import save_figure, study_title
from batchscale.report.figures.comparison import comparison_figure
from batchscale.report.figures.registry import FIGURES, FigureInputs
from batchscale.report.figures.speedup import speedup_figure
from batchscale.report.figures.steps_examples import fit_metric, fits_from_critical, steps_examples_figure
from batchscale.spec.manifest import STUDY_FIGURES, STUDY_TABLES, TUNED_FIGURES, TUNED_TABLES, names
from batchscale.store.cube import open_cube
from batchscale.store.records import read_csv, read_json

# Files a figure reads beyond the manifest's STUDY_TABLES and TUNED_TABLES, when the study folder has them:
# B_crit across eps, and a least-squares study's theory.json (its predicted linear approximation error).
FIGURE_TABLES = ("critical_vs_threshold.csv", "theory.json")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # each registers its figures


def read_study_tables(tables_dir) -> dict:
    """The analysis files of a study folder.

    Args:
      tables_dir: the study's folder.

    Returns:
      {stem: DataFrame or None} for every CSV file of STUDY_TABLES, TUNED_TABLES and FIGURE_TABLES (None where
      absent) and {"critical_batch": dict, "theory": dict} ({} where absent).
    """
    folder = Path(tables_dir)
    out = {}
    for name in dict.fromkeys(names(STUDY_TABLES + TUNED_TABLES) + list(FIGURE_TABLES)):
        path = folder / name
        stem, _, ext = name.rpartition(".")
        if ext == "csv":
            out[stem] = read_csv(path) if path.exists() else None
        elif ext == "json":
            out[stem] = read_json(path) if path.exists() else {}
    return out


def draw_figures(names_to_draw, study: FigureInputs, out_dir) -> list[Path]:
    """Draw the named figures into `out_dir` (``{name}.png`` and ``{name}.svg``); returns the written paths."""
    paths = []
    for name in names_to_draw:
        paths += save_figure(FIGURES[name](study), out_dir, name)
    return paths


def draw_study_figures(cube_path, study_config: dict, out_dir, tables_dir, study: str | None = None,
                       figures=None) -> list[Path]:
    """Draw every figure of STUDY_FIGURES for a study cube and the analysis files in `tables_dir`.

    Args:
      cube_path: the study's cube.nc (its raw traces).
      study_config: the study config.
      out_dir: the figures' folder.
      tables_dir: the folder of the study's analysis files.
      study: the study's name: with it, a cube of another study or config is refused.
      figures: the names to draw (default: the manifest's STUDY_FIGURES).

    Returns:
      the paths written.
    """
    cube = open_cube(cube_path, study, study_config if study is not None else None)
    config = study_config if study_config is not None else json.loads(cube.attrs.get("study_config_json", "{}"))
    study = FigureInputs(read_study_tables(tables_dir), config, study_title(cube, config), cube)
    return draw_figures(figures or names(STUDY_FIGURES), study, out_dir)


def draw_tuned_figures(tables_dir, study_config: dict, out_dir) -> list[Path]:
    """Draw every figure of TUNED_FIGURES from a tuned study's analysis files.

    Args:
      tables_dir: the folder of the study's analysis files (tuned.csv, tuned_trials.csv, ...).
      study_config: the study config.
      out_dir: the figures' folder.

    Returns:
      the paths written.
    """
    study = FigureInputs(read_study_tables(tables_dir), study_config, study_title(None, study_config))
    return draw_figures(names(TUNED_FIGURES), study, out_dir)


def draw_comparison(table_path, spec: dict, out_dir, name: str) -> list[Path]:
    """Draw a comparison's ``speedup.png``/``.svg`` from its table (`batchscale.analysis.comparison`)."""
    table = pd.read_csv(table_path)
    title = spec.get("title") or name
    return save_figure(comparison_figure(table, title=title), out_dir, "speedup")


def draw_external_figures(result: dict, out_dir) -> list[Path]:
    """The `figure_hook` of `batchscale.analysis.external.analyze_external`: ``speedup`` and
    ``steps_vs_examples`` (.png and .svg) of the external table, into `out_dir`."""
    table = result["speedup"]
    metric = fit_metric(table)
    source = Path(str(result.get("critical_batch", {}).get("source", "external CSV"))).name
    name = f"external sweep ({source})"
    paths = save_figure(speedup_figure(table, result.get("speedup_common"), metrics=[metric], study=name), out_dir,
                        "speedup")
    fits = fits_from_critical(result.get("critical_batch", {}), metric)
    paths += save_figure(steps_examples_figure(table, fits, metric=metric, study=name), out_dir,
                         "steps_vs_examples")
    return paths
