"""Incremental reruns: which edits rerun what, and that nothing else reruns.

One workflow copy in a temporary directory with two tiny studies (a, b: digits, linear model, blr, batch sizes
32 and 64, seed 0, one epoch) goes through the edits a user makes, in order; after each, `snakemake -n`
must schedule exactly the jobs the README's "Incremental reruns" table promises. A train job is a pack
(the runs of a study at one batch size, one strategy and one block of seeds), named
train_<study>_bs<m>_<strategy>_s<block>; its outputs say which runs it trains. The targets are the two cubes, so the test covers the train -> cube part of the
DAG whatever the analysis and figure rules do.
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
    """The jobs `snakemake -n` schedules for the cubes: {(rule, outputs): reason}, outputs being the
    (strategy, batch, seed) of the traces a train job writes; a cube job is (cube, study). Checks the job-stats
    table against the job list."""
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
        runs = frozenset((s, int(m), int(seed)) for s, m, seed in
                         re.findall(r"traces/(\w+)/bs(\d+)/seed(\d+)\.h5", fields.get("output", "")))
        wildcards = dict(item.split("=", 1) for item in fields.get("wildcards", "").split(", ") if item)
        key = (rule.group(1), runs) if rule.group(1) != "cube" else ("cube", wildcards["study"])
        assert key not in jobs, f"job {key} listed twice"
        jobs[key] = fields.get("reason", "")
    stats = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", text, re.S)
    assert stats, text[-3000:]
    counts = {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", stats.group(1), re.M)}
    listed: dict[str, int] = {}
    for rule, _ in jobs:
        listed[rule] = listed.get(rule, 0) + 1
    assert counts == listed and int(stats.group(2)) == len(jobs), (counts, listed)
    return jobs


def train(study: str, batch: int, seeds=(0,), strategy="blr", block=0) -> tuple:
    """The pack job of `study` at `batch` for `strategy` and seed block `block`, training these seeds."""
    return (f"train_{study}_bs{batch}_{strategy}_s{block}", frozenset((strategy, batch, seed) for seed in seeds))


def cube(study: str) -> tuple:
    return ("cube", study)


def train_jobs(jobs: dict) -> set:
    return {key for key in jobs if key[0] != "cube"}


def cube_count(jobs: dict) -> int:
    return sum(1 for key in jobs if key[0] == "cube")


def mtimes(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in (workdir / "results").rglob("*")
            if p.suffix in (".h5", ".nc")}


def changed_since(workdir: Path, before: dict[str, int]) -> set[str]:
    after = mtimes(workdir)
    return {path for path in after if before.get(path) != after[path]}


def test_each_edit_reruns_exactly_what_it_changes(tmp_path, monkeypatch):
    workdir = copy_workflow(tmp_path)
    config = base_config()
    write_config(workdir / "config.yaml", config)

    # (a) dry run: one pack job per (study, batch size, strategy, seed block), one cube job per study
    jobs = planned(workdir)
    assert train_jobs(jobs) == {train(s, m) for s in "ab" for m in (32, 64)}
    assert cube_count(jobs) == 2
    assert all("Missing output files" in reason for reason in jobs.values())

    # (b) real run, then nothing to do
    snakemake(workdir, "--cores", "2", *TARGETS)
    assert planned(workdir) == {}
    before = mtimes(workdir)
    assert len(before) == 6

    # (c) one study's parameter: that study's packs and its cube, nothing of the other study
    config["studies"]["a"]["eta0"] = 0.02
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert set(jobs) == {train("a", 32), train("a", 64), cube("a")}
    assert all("Params have changed" in jobs[train("a", m)] for m in (32, 64))
    snakemake(workdir, "--cores", "2", *TARGETS)
    assert changed_since(workdir, before) == {"results/a/traces/blr/bs32/seed0.h5",
                                              "results/a/traces/blr/bs64/seed0.h5", "results/a/cube.nc"}
    assert planned(workdir) == {}

    # (d) an added batch size: its pack and the cube
    config["studies"]["b"]["batch_sizes"] = [32, 64, 128]
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert set(jobs) == {train("b", 128), cube("b")}
    snakemake(workdir, "--cores", "2", *TARGETS)
    assert planned(workdir) == {}

    # (e) an added strategy: new packs only, the existing traces kept as they are
    config["studies"]["a"]["strategies"] = ["blr", "lsr"]
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert train_jobs(jobs) == {train("a", m, strategy="lsr") for m in (32, 64)} and cube("a") in jobs
    before = mtimes(workdir)
    snakemake(workdir, "--cores", "2", *TARGETS)
    assert changed_since(workdir, before) == {f"results/a/traces/lsr/bs{m}/seed0.h5" for m in (32, 64)} | {
        "results/a/cube.nc"}

    # (f) an added seed joins its block (seeds 0-7 by default): those packs retrain whole, so every trace
    # equals a run of the grown config from scratch; with one seed per block it is a pack of its own
    config["studies"]["a"]["seeds"] = [0, 1]
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert train_jobs(jobs) == {train("a", m, (0, 1), s) for m in (32, 64) for s in ("blr", "lsr")}
    config["studies"]["a"]["pack"] = {"seeds_per_pack": 1}
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert train_jobs(jobs) == {train("a", m, (1,), s, block=1) for m in (32, 64) for s in ("blr", "lsr")}
    before = mtimes(workdir)
    snakemake(workdir, "--cores", "2", *TARGETS)
    assert changed_since(workdir, before) == {f"results/a/traces/{s}/bs{m}/seed1.h5" for s in ("blr", "lsr")
                                              for m in (32, 64)} | {"results/a/cube.nc"}
    assert planned(workdir) == {}

    # (g) threads are part of what fixes a trace's bits (the config decides them, never --cores): a change
    # retrains the packs whose thread count changes, here those at batch 64 and above
    config["train_threads"] = {"single_thread_below": 64, "max": 2}
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert {key[0] for key in train_jobs(jobs)} == {"train_a_bs64_blr_s0", "train_a_bs64_blr_s1",
                                                   "train_a_bs64_lsr_s0", "train_a_bs64_lsr_s1",
                                                   "train_b_bs64_blr_s0", "train_b_bs128_blr_s0"}
    assert all("Params have changed" in reason for key, reason in jobs.items() if key[0] != "cube")
    del config["train_threads"]
    write_config(workdir / "config.yaml", config)
    assert planned(workdir) == {}, "undoing an edit that never ran leaves nothing to do"

    # A study's description is part of the cube's params (the cube records the study config): the cube
    # reruns, no training does.
    config["studies"]["b"]["description"] = "renamed"
    write_config(workdir / "config.yaml", config)
    jobs = planned(workdir)
    assert set(jobs) == {cube("b")} and "Params have changed" in jobs[cube("b")]
    del config["studies"]["b"]["description"]
    write_config(workdir / "config.yaml", config)

    # (h) A change in the code that produces traces (the train stage's import closure, jobs.fingerprints)
    # retrains every run: its hash is a param of every pack rule. Simulated on a copy of the package put first
    # on PYTHONPATH (for the Snakefile and the jobs).
    package = tmp_path / "pkg" / "batchscale"
    shutil.copytree(REPO / "src" / "batchscale", package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONPATH", str(package.parent))
    imported = subprocess.run([str(VENV_BIN / "python"), "-c", "import batchscale; print(batchscale.__file__)"],
                              env=workflow_env(), capture_output=True, text=True, check=True).stdout
    assert imported.strip() == str(package / "__init__.py")
    analysis = package / "analysis" / "study.py"
    analysis.write_text(analysis.read_text() + "\n# an edit outside the engine\n")
    assert planned(workdir) == {}, "an analysis edit does not retrain"
    engine = package / "engine" / "pack.py"
    engine.write_text(engine.read_text().replace("check_every = 1 if", "check_every = 2 if"))
    jobs = planned(workdir)
    every = {train("a", m, (seed,), s, block=seed) for m in (32, 64) for s in ("blr", "lsr") for seed in (0, 1)}
    every |= {train("b", m) for m in (32, 64, 128)}
    assert train_jobs(jobs) == every and cube_count(jobs) == 2
    assert all("Params have changed" in r for k, r in jobs.items() if k[0] != "cube")
