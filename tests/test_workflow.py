"""The whole workflow on a tiny config in a temporary directory: every output, then the report."""

import json
import re
import zipfile

import h5py
import pandas as pd
import pytest
import xarray as xr

from conftest import snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

FIGURES = ["fig1_train_loss_contours", "fig5_test_loss_contours", "fig2_speedup", "fig2_accuracy_linear_error",
           "steps_vs_examples", "loss_curves", "critical_vs_threshold"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from conftest import copy_workflow

    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    config = tiny_config(strategies=["blr", "lsr"], batch_sizes=[16, 32, 64], seeds=[0, 1])
    config["studies"]["tiny_mlp"] = dict(config["studies"]["tiny"], model={"name": "mlp", "options": {"hidden": [32]}},
                                         strategies=["blr"])
    config["comparisons"] = {"models": {"studies": ["tiny", "tiny_mlp"], "labels": ["linear", "MLP"]}}
    config["studies"]["tiny"]["base_batch"] = 16
    config["studies"]["tiny_mlp"]["base_batch"] = 16
    write_config(workdir / "config.yaml", config)
    dry = snakemake(workdir, "-n")
    run = snakemake(workdir, "--cores", "2")
    again = snakemake(workdir, "-n")
    return workdir, dry, run, again


def _job_counts(output: str) -> dict:
    table = output[output.index("Job stats"):]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_lists_one_job_per_run_and_per_study(finished):
    _, dry, _, again = finished
    counts = _job_counts(dry.stdout)
    # one pack job per study, batch size and strategy (tiny: blr and lsr, 2 seeds each; tiny_mlp: blr)
    packs = {rule: count for rule, count in counts.items() if rule.startswith("train_")}
    assert sorted(packs) == sorted(f"train_{study}_bs{m}_{s}_s0" for study, strategies in
                                   (("tiny", ("blr", "lsr")), ("tiny_mlp", ("blr",)))
                                   for m in (16, 32, 64) for s in strategies)
    assert set(packs.values()) == {1}
    assert counts["cube"] == counts["analyze"] == counts["figures"] == 2
    assert counts["compare"] == 1
    assert "Nothing to be done" in again.stdout + again.stderr


def test_every_output_of_every_study(finished):
    workdir = finished[0]
    for study, strategies in (("tiny", ["blr", "lsr"]), ("tiny_mlp", ["blr"])):
        root = workdir / "results" / study
        for strategy in strategies:
            for batch in (16, 32, 64):
                for seed in (0, 1):
                    with h5py.File(root / "traces" / strategy / f"bs{batch}" / f"seed{seed}.h5") as trace:
                        assert trace.attrs["batch_size"] == batch and trace.attrs["strategy"] == strategy
        cube = xr.open_dataset(root / "cube.nc", engine="h5netcdf")
        assert dict(cube.sizes)["strategy"] == len(strategies) and list(cube.batch_size.values) == [16, 32, 64]
        table = pd.read_csv(root / "speedup.csv")
        assert len(table) == len(strategies) * 3 * 3  # strategy x batch size x metric
        assert set(table.metric) == {"train_loss", "test_loss", "test_error"}
        base = table[table.batch_size == 16]
        assert (base.speedup.dropna() == 1.0).all()
        critical = json.loads((root / "critical_batch.json").read_text())
        assert set(critical["strategies"]) == set(strategies)
        accuracy = pd.read_csv(root / "accuracy.csv")
        assert len(accuracy) == len(strategies) * 3
        assert (root / "accuracy.md").read_text().count("\n") >= 4
        for name in FIGURES:
            for ext in ("png", "svg"):
                assert (root / "figures" / f"{name}.{ext}").stat().st_size > 1000
    assert (workdir / "results" / "comparisons" / "models" / "speedup.png").stat().st_size > 1000


def test_report_holds_every_figure_and_table(finished):
    workdir = finished[0]
    snakemake(workdir, "--report", "report.zip")
    with zipfile.ZipFile(workdir / "report.zip") as archive:
        names = archive.namelist()
        page = archive.read(next(n for n in names if n.endswith("report.html"))).decode()
    # the archive stores each file as report/data/raw/<hash>/<basename>: one per study
    basenames = [n.rsplit("/", 1)[-1] for n in names if "/data/raw/" in n]
    for name in FIGURES:
        assert basenames.count(f"{name}.png") == 2, name
    for table in ("speedup.csv", "critical_batch.json", "accuracy.csv"):
        assert basenames.count(table) == 2, table
    assert basenames.count("speedup.png") == 1  # the comparison
    for caption_fragment in ("Fig. 1", "tiny_mlp", "models"):
        assert caption_fragment in page
