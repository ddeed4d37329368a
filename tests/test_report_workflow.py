"""One finished run of a tiny config that branches, through the workflow: the summary states the local critical
batch, `snakemake --report` with the same --configfile renders every caption without a docutils message and
carries the branching table and figure, and the docs' open_study example runs as written on it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re

import pytest

from conftest import copy_workflow, snakemake, write_config
from test_api import API_DOC, fenced_blocks

STUDY = "digits_mlp"  # the name the README's API example opens
CONFIG = {"studies": {STUDY: {
    "dataset": {"name": "digits", "max_examples": 512, "max_test_examples": 128},
    "model": {"name": "linear"}, "eta0": 0.05, "base_batch": 16, "optimizer": {"momentum": 0.9},
    "strategies": ["blr", "lsr"], "epochs": 2, "batch_sizes": [16, 32, 64], "seeds": [0],
    "evaluation": {"points_per_decade": 6, "train_subset": 256, "linear_approx": False},
    "bootstrap": {"samples": 50}, "device": "cpu",
    "branching": {"enabled": True, "strategy": "lsr", "seed": 0, "checkpoints": 2, "k": [1, 2, 4],
                  "delta_examples": 128, "evaluations": 2, "tolerance": 0.05},
}}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = copy_workflow(tmp_path_factory.mktemp("branching_report"))
    write_config(folder / "tiny.yaml", CONFIG)
    snakemake(folder, "--cores", "2", configfile="tiny.yaml")
    return folder


def test_the_summary_states_the_local_critical_batch(finished):
    text = (finished / "results" / "summary-tiny.md").read_text()
    line = next(line for line in text.splitlines() if "local critical batch by branching" in line)
    assert line.startswith("- local critical batch by branching from lsr at B = 16, seed 0 (branches of 128 "
                           "examples at k·B for k = 1, 2, 4;")
    assert line.count(" examples ") == 1 + 2  # the branches' Δ, then one bracket per checkpoint


def test_the_report_renders_every_caption_and_carries_the_branching_result(finished):
    done = snakemake(finished, "--report", "report.html", configfile="tiny.yaml")
    messages = re.findall(r"\((?:ERROR|WARNING|SEVERE)/\d\).*", done.stdout + done.stderr)
    assert not messages, "docutils messages while rendering captions:\n" + "\n".join(messages)
    assert "local_critical_batch.csv" in done.stderr and "local_critical_batch.png" in done.stderr
    page = (finished / "report.html").read_text()
    assert "Local critical batch size by branching from checkpoints" in page  # the table's caption, rendered
    assert "Local critical batch size over training" in page  # the figure's
    assert "system-message" not in page


def test_the_docs_study_example_runs_as_written_on_the_finished_study(finished):
    code = fenced_blocks(API_DOC, "### A study's results")[0][1]
    out = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(finished)
        with contextlib.redirect_stdout(out):
            namespace = {"__name__": "__api_study_example__"}
            exec(compile(code, str(API_DOC), "exec"), namespace)
    finally:
        os.chdir(cwd)
    study = namespace["study"]
    assert "local_critical_batch" in study.table_names and "speedup" in study.table_names
    numbers = json.loads((finished / "results" / "summary-tiny.json").read_text())
    lsr = numbers["studies"][0]["strategies"]["lsr"]["critical"]
    assert study.critical("lsr", common=True).report == lsr["report"]  # the summary's B_crit, through the API
    assert str(study.critical()).startswith("B_crit")
    assert set(namespace["cube"]["train_loss"].dims) == {"strategy", "batch_size", "seed", "step"}
    assert "lsr" in out.getvalue() and "final_train_loss" not in out.getvalue()  # the printed tables
