"""Divergence end to end: presets/diverge.yaml, whose LSR runs diverge at large batch sizes, goes through the
whole workflow (train, cube, analysis, figures) and every product marks the diverged runs."""

from __future__ import annotations

import json
import math
import shutil

import h5py
import pandas as pd
import pytest
import xarray as xr

from conftest import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.slow

STUDY = "digits_diverge"
DIVERGING = (512, 1024)  # LSR's peak rate 2.56 and 5.12 (eta0 0.02 at m0 = 4)
STABLE = (4, 16, 64)
FIGURES = ("fig1_train_loss_contours", "fig5_test_loss_contours", "fig2_speedup", "fig2_accuracy_linear_error",
           "steps_vs_examples", "loss_curves")
# figures that draw individual runs or batch sizes, and so must mark the diverged ones (an SVG element
# with gid "diverged", as batchscale.report.figures draws it)
MARKING_FIGURES = ("fig2_speedup", "loss_curves", "fig1_train_loss_contours")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("diverge"))
    # rules name a conda env; Snakemake reads it when it records a finished job, even without --sdm conda
    shutil.copy(REPO / "presets" / "diverge.yaml", workdir / "config.yaml")
    done = snakemake(workdir, "--cores", "2")  # target `all`; raises unless snakemake exits 0
    assert done.returncode == 0
    return workdir


def test_the_workflow_finishes_and_diverged_runs_are_results_not_failures(finished):
    again = snakemake(finished, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr, "diverged runs must not be rerun"


def test_traces_say_diverged_and_stop_early(finished):
    traces = finished / "results" / STUDY / "traces"
    for size in DIVERGING:
        for path in sorted((traces / "lsr" / f"bs{size}").glob("seed*.h5")):
            with h5py.File(path, "r") as handle:
                assert handle.attrs["status"] == "diverged", path
                steps, losses = handle["step"][()], handle["train_loss"][()]
                assert steps[-1] < handle.attrs["steps_total"], "a diverged run stops early"
                run = json.loads(handle.attrs["config_json"])
                assert not math.isfinite(losses[-1]) or losses[-1] > run["divergence_factor"] * losses[0]
                # traced at every evaluation point; the scalar at the last finite weights
                assert handle["linear_approx_error"].shape == steps.shape
                assert handle["final_linear_approx_error"].shape == ()
    for strategy, sizes in (("blr", STABLE + DIVERGING), ("lsr", STABLE)):
        for size in sizes:
            for path in sorted((traces / strategy / f"bs{size}").glob("seed*.h5")):
                with h5py.File(path, "r") as handle:
                    assert handle.attrs["status"] == "completed", path


def test_cube_status_says_diverged(finished):
    with xr.open_dataset(finished / "results" / STUDY / "cube.nc", engine="h5netcdf") as cube:
        status = cube["status"].load()
    for size in DIVERGING:
        assert (status.sel(strategy="lsr", batch_size=size).values.astype(str) == "diverged").all()
        assert (status.sel(strategy="blr", batch_size=size).values.astype(str) == "completed").all()
    assert (status.sel(strategy="lsr", batch_size=list(STABLE)).values.astype(str) == "completed").all()


def test_tables_mark_the_diverged_runs(finished):
    results = finished / "results" / STUDY
    speedup = pd.read_csv(results / "speedup.csv")
    lsr_large = speedup[(speedup.strategy == "lsr") & speedup.batch_size.isin(DIVERGING)]
    assert len(lsr_large) >= len(DIVERGING) and (lsr_large.status == "diverged").all()
    assert (lsr_large.n_diverged == lsr_large.n_seeds).all()
    assert (speedup[speedup.status == "diverged"].strategy == "lsr").all()
    assert set(speedup[speedup.status == "diverged"].batch_size) == set(DIVERGING)
    assert (speedup[speedup.strategy == "blr"].status != "diverged").all()

    accuracy = pd.read_csv(results / "accuracy.csv")
    marked = accuracy[accuracy.n_diverged > 0]
    assert set(zip(marked.strategy, marked.batch_size)) == {("lsr", size) for size in DIVERGING}

    table = (results / "accuracy.md").read_text()
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = dict(zip(header, cells))
    for size in DIVERGING:
        assert "diverged" in rows[size]["lsr"] and "diverged" not in rows[size]["blr"]
    for size in STABLE:
        assert "diverged" not in rows[size]["lsr"]

    critical = json.loads((results / "critical_batch.json").read_text())  # strict JSON: no NaN or Infinity
    assert critical


def test_figures_exist_and_mark_the_diverged_runs(finished):
    figures = finished / "results" / STUDY / "figures"
    for name in FIGURES:
        png = figures / f"{name}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for name in MARKING_FIGURES:
        assert 'id="diverged' in (figures / f"{name}.svg").read_text(), f"{name} does not mark the diverged runs"
