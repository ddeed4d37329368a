"""Incremental reruns: which edits rerun what, and that nothing else reruns.

One workflow copy in a temporary directory with two tiny studies (a, b: digits, linear model, blr, batch sizes
32 and 64, seed 0, one epoch) goes through the edits a user makes, in order; after each, `snakemake -n`
must schedule exactly the jobs the README's "Incremental reruns" table promises. The targets are the two
cubes, so the test covers the train -> cube part of the DAG whatever the analysis and figure rules do
(downstream of a cube, Snakemake reruns what depends on it by the same input/mtime triggers).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, TINY_STUDY, VENV_BIN, copy_workflow, snakemake, workflow_env, write_config

pytestmark = pytest.mark.slow

TARGETS = ("results/a/cube.nc", "results/b/cube.nc")
NOTHING_TO_DO = "Nothing to be done"


def base_config() -> dict:
    study = copy.deepcopy(TINY_STUDY)
    study["epochs"] = 1
    return {"studies": {"a": copy.deepcopy(study), "b": copy.deepcopy(study)}}


def planned(workdir: Path, *extra: str) -> dict[tuple, str]:
    """The jobs `snakemake -n` schedules for the cubes: {(rule, study, strategy, batch, seed): reason};
    a cube job is (cube, study, None, None, None). Checks the job-stats table against the job list."""
    out = snakemake(workdir, "-n", *TARGETS, *extra)  # targets first: --forcerun takes every name after it
    text = out.stdout + out.stderr
    if NOTHING_TO_DO in text:
        return {}
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", text):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        if not rule:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        wildcards = dict(item.split("=", 1) for item in fields.get("wildcards", "").split(", ") if item)
        key = (rule.group(1), wildcards.get("study"), wildcards.get("strategy"),
               int(wildcards["batch_size"]) if "batch_size" in wildcards else None,
               int(wildcards["seed"]) if "seed" in wildcards else None)
        assert key not in jobs, f"job {key} listed twice"
        jobs[key] = fields.get("reason", "")
    stats = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", text, re.S)
    assert stats, text[-3000:]
    counts = {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", stats.group(1), re.M)}
    listed: dict[str, int] = {}
    for rule, *_ in jobs:
        listed[rule] = listed.get(rule, 0) + 1
    assert counts == listed and int(stats.group(2)) == len(jobs), (counts, listed)
    return jobs


def train(study: str, batch: int, seed: int = 0) -> tuple:
    return ("train", study, "blr", batch, seed)


def cube(study: str) -> tuple:
    return ("cube", study, None, None, None)


def mtimes(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in (workdir / "results").rglob("*")
            if p.suffix in (".h5", ".nc")}


def workflow_copy(target: Path) -> Path:
    workdir = copy_workflow(target)
    # rules name a conda env (`conda: ../../envs/batchscale.yaml`); Snakemake reads it when it records a
    # finished job's metadata, even without --sdm conda
    return workdir


def test_each_edit_reruns_exactly_what_it_changes(tmp_path, monkeypatch):
    workdir = workflow_copy(tmp_path)
    config = base_config()
    write_config(workdir / "config.yaml", config)

    # (a) dry run: one train job per (study, strategy, batch size, seed), one cube job per study
    jobs = planned(workdir)
    assert set(jobs) == {train(s, m) for s in "ab" for m in (32, 64)} | {cube("a"), cube("b")}
    assert all("Missing output files" in reason for reason in jobs.values())

    # (b) real run, then nothing to do
    snakemake(workdir, "--cores", "2", *TARGETS)
    assert planned(workdir) == {}
    before = mtimes(workdir)
    assert len(before) == 6

    # (c) one study's parameter: that study's train jobs and its cube, nothing of the other study
    config["studies"]["a"]["eta0"] = 0.02
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert set(jobs) == {train("a", 32), train("a", 64), cube("a")}
    assert all("Params have changed" in jobs[train("a", m)] for m in (32, 64))
    snakemake(workdir, "--cores", "2", *TARGETS)
    after = mtimes(workdir)
    changed = {path for path in before if after[path] != before[path]}
    assert changed == {"results/a/traces/blr/bs32/seed0.h5", "results/a/traces/blr/bs64/seed0.h5",
                       "results/a/cube.nc"}
    assert planned(workdir) == {}

    # (d) an added batch size: its train job and the cube
    config["studies"]["b"]["batch_sizes"] = [32, 64, 128]
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert set(jobs) == {train("b", 128), cube("b")}
    snakemake(workdir, "--cores", "2", *TARGETS)
    assert planned(workdir) == {}

    # (e) an added seed: the new seed's train jobs and the cube (dry run only)
    config["studies"]["a"]["seeds"] = [0, 1]
    write_config(workdir / "config.yaml", config)
    assert set(planned(workdir)) == {train("a", 32, 1), train("a", 64, 1), cube("a")}
    config["studies"]["a"]["seeds"] = [0]
    write_config(workdir / "config.yaml", config)
    assert planned(workdir) == {}, "undoing an edit that never ran leaves nothing to do"

    # Settings that do not change a trace rerun nothing: thread counts are not params of the train rule.
    config["train_threads"] = {"single_thread_below": 16, "max": 2}
    write_config(workdir / "config.yaml", config)
    assert planned(workdir) == {}
    del config["train_threads"]
    write_config(workdir / "config.yaml", config)

    # A study's description is part of the cube's params (the cube records the study config): the cube
    # reruns, no training does.
    config["studies"]["b"]["description"] = "renamed"
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert set(jobs) == {cube("b")} and "Params have changed" in jobs[cube("b")]
    del config["studies"]["b"]["description"]
    write_config(workdir / "config.yaml", config)

    # (f) the train rule's command line is its code: editing it reruns every train job (the `code` trigger)
    rule = workdir / "workflow" / "rules" / "train.smk"
    original = rule.read_text()
    rule.write_text(original.replace("--threads {threads}", "--threads {threads} --quiet"))
    jobs = planned(workdir)
    assert {key for key in jobs if key[0] == "train"} == {train(s, m) for s in "ab" for m in (32, 64)} | {
        train("b", 128)}
    assert all("Code has changed" in reason for key, reason in jobs.items() if key[0] == "train")
    rule.write_text(original)
    assert planned(workdir) == {}

    # A change in the code that produces traces (src/batchscale/{engine,models,data,traces.py}) reruns
    # training: the train rule carries a hash of those sources as a param (Snakemake's code trigger only
    # sees the text of a shell: command). Simulated on a copy of the package put first on PYTHONPATH (for
    # the Snakefile and the jobs), with a real edit.
    package = tmp_path / "pkg" / "batchscale"
    shutil.copytree(REPO / "src" / "batchscale", package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONPATH", str(package.parent))
    imported = subprocess.run([str(VENV_BIN / "python"), "-c", "import batchscale; print(batchscale.__file__)"],
                              env=workflow_env(), capture_output=True, text=True, check=True).stdout
    assert imported.strip() == str(package / "__init__.py")
    analysis = package / "analysis" / "tables.py"
    analysis.write_text(analysis.read_text() + "\n# an edit outside the engine\n")
    assert planned(workdir) == {}, "an analysis edit does not retrain"
    engine = package / "engine" / "train.py"
    engine.write_text(engine.read_text().replace("check_every = 1 if", "check_every = 2 if"))
    jobs = planned(workdir)
    assert set(jobs) == {train(s, m) for s in "ab" for m in (32, 64)} | {train("b", 128), cube("a"), cube("b")}
    assert all("Params have changed" in r for k, r in jobs.items() if k[0] == "train")
    # The documented way to retrain after an engine change: force the train rule (its outputs are rewritten,
    # so every cube, and what depends on it, follows).
    jobs = planned(workdir, "--forcerun", "train")
    assert set(jobs) == {train(s, m) for s in "ab" for m in (32, 64)} | {train("b", 128), cube("a"), cube("b")}
    assert all("Forced execution" in reason for key, reason in jobs.items() if key[0] == "train")
