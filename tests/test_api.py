"""The Python API (batchscale.fit_critical_batch, speedup_table, open_study): the documented example run as
written against hand-computed numbers, the same numbers as `batchscale analyze`, bounds and bad tables, a
study folder read with the workflow's checks, and a package face that loads nothing heavy."""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import batchscale
from batchscale.analysis import api
from batchscale.analysis.external import analyze_external
from batchscale.errors import ConfigError, StageInputError
from batchscale.store.cube import cube_content_hash, write_cube
from batchscale.store.records import write_record
from conftest import REPO, VENV_BIN

# The example lives in the README under this heading, run here as written.
API_DOC = REPO / "README.md"
API_HEADING = "## Python API"


def fenced_blocks(path, heading: str) -> list[tuple[str, str]]:
    """[(language, code)] of the fenced blocks after `heading` (a line of the file), up to the next heading of
    the same or a higher level."""
    text = path.read_text()
    start = re.search(rf"^{re.escape(heading)}\s*$", text, re.M)
    assert start, f"{path}: no heading {heading!r}"
    level = len(heading) - len(heading.lstrip("#"))
    following = re.search(rf"^#{{1,{level}}} ", text[start.end():], re.M)
    section = text[start.end(): start.end() + following.start() if following else len(text)]
    return re.findall(r"^```(\w*)\n(.*?)^```", section, re.M | re.S)


def run_block(code: str) -> tuple[dict, str]:
    namespace = {"__name__": "__api_example__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(API_DOC), "exec"), namespace)
    return namespace, out.getvalue()


# ---- the documented example, as written ----

def test_the_documented_example_runs_as_written_and_prints_what_the_page_says():
    blocks = fenced_blocks(API_DOC, API_HEADING)
    (language, code), (_, printed) = blocks[0], blocks[1]
    assert language == "python"
    namespace, out = run_block(code)
    assert out == printed  # the page shows exactly what the code prints

    fit, table = namespace["fit"], namespace["table"]
    S, B, m0 = 100.0, 100.0, 16
    # the seed means are the curve itself: the fit is exact
    assert fit.b_crit == pytest.approx(B, rel=1e-9) and fit.s_min == pytest.approx(S, rel=1e-9)
    assert fit.e_min == pytest.approx(S * B, rel=1e-9) and fit.log_rmse < 1e-9
    assert fit.report == "100" and fit.bound is None and fit.accepted and fit.note is None
    assert fit.interval.kind == "student_t" and fit.interval.low < B < fit.interval.high  # 3 seeds
    assert fit.n_points == 8 and fit.n_seeds == 3 and fit.entry["excluded"].keys() == {"4096"}
    assert fit.overhead == 0.2 and fit.overhead_batch_fit == pytest.approx(1.2 * m0 + 0.2 * B)  # 39.2
    # read off k(m): k m = S (m + B) crosses 1.2 k(m0) m0 between 32 and 64, log-log interpolated
    g = lambda m: math.log((m + B) / (m0 + B))  # noqa: E731
    t = (math.log(1.2) - g(32)) / (g(64) - g(32))
    assert fit.overhead_batch == pytest.approx(32 * 2 ** t, rel=1e-9)
    # m = 32's efficiency 0.879 clears 0.8, but its interval's lower bound (speedup_low 1.25 x 16/32 = 0.625)
    # does not: no size is shown to be linear
    assert fit.largest_linear is None and fit.first_stagnation == 1024

    sizes = [16, 32, 64, 128, 256, 512, 1024, 2048]
    reached = table[table["batch_size"] <= 2048]
    assert table["batch_size"].tolist() == sizes + [4096]
    np.testing.assert_allclose(reached["k_mean"], [S * (1 + B / m) for m in sizes], rtol=1e-12)
    np.testing.assert_allclose(reached["speedup"], [(1 + B / m0) / (1 + B / m) for m in sizes], rtol=1e-12)
    np.testing.assert_allclose(reached["efficiency"], [(m0 + B) / (m + B) for m in sizes], rtol=1e-12)
    np.testing.assert_allclose(reached["ideal_speedup"], [m / m0 for m in sizes])
    np.testing.assert_allclose(reached["efficiency_low"], reached["speedup_low"] / reached["ideal_speedup"])
    assert table["regime"].tolist() == ["base", "unresolved"] + ["diminishing"] * 4 + ["stagnation"] * 2 + ["not_reached"]
    last = table.iloc[-1]
    assert np.isposinf(last["k_mean"]) and np.isnan(last["speedup"]) and last["status"] == "not_reached"
    assert (table["interval_kind"] == "student_t").all()


def test_the_studys_example_block_is_python():
    blocks = fenced_blocks(API_DOC, "### A study's results")
    assert blocks[0][0] == "python" and "open_study(\"results/digits_mlp\")" in blocks[0][1]
    compile(blocks[0][1], str(API_DOC), "exec")  # run on a finished study by tests/test_report_workflow.py


def test_the_docstring_examples_hold():
    failures, tried = doctest.testmod(api, verbose=False)
    assert tried >= 6 and failures == 0


# ---- the same numbers as `batchscale analyze` ----

def steps_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = [{"batch_size": m, "seed": s, "steps": 50 * (1 + 40 / m) * math.exp(rng.normal(0, 0.05))}
            for m in (4, 8, 16, 32, 64, 128) for s in range(5)]
    rows[-1]["steps"] = np.inf
    return pd.DataFrame(rows)


def test_the_api_gives_the_numbers_batchscale_analyze_writes(tmp_path):
    df = steps_frame()
    df.to_csv(tmp_path / "sweep.csv", index=False)
    written = analyze_external(tmp_path / "sweep.csv", tmp_path / "out", bootstrap={"samples": 200})
    entry = dict(written["critical_batch"]["strategies"]["external"]["steps"])
    fit = batchscale.fit_critical_batch(df.rename(columns={"batch_size": "m", "steps": "k"}), "m", "k", "seed",
                                        samples=200)
    assert fit.entry == entry
    assert fit.interval.kind == "percentile_bootstrap"
    table = batchscale.speedup_table(df, seed="seed", samples=200)
    speedup = pd.read_csv(tmp_path / "out" / "speedup.csv")
    shared = [c for c in api.SPEEDUP_TABLE_COLUMNS if c in speedup.columns]
    pd.testing.assert_frame_equal(table[shared], speedup[shared], check_dtype=False)
    opened = batchscale.open_study(tmp_path / "out")
    assert opened.critical().entry == entry and opened.table_names == ["speedup"]


# ---- bounds, bad tables ----

def test_a_curve_still_falling_is_a_bound_above_and_a_flat_one_below():
    m = [16, 32, 64, 128, 256]
    rising = batchscale.fit_critical_batch({"batch_size": m, "steps": [1e5 / b for b in m]})
    assert rising.bound == "above_range" and rising.report == "> 256" and not rising.accepted
    assert math.isinf(rising.b_crit) and "still falls" in rising.note
    flat = batchscale.fit_critical_batch({"batch_size": m, "steps": [100 * (1 + 2 / b) for b in m]})
    assert flat.bound == "below_range" and flat.report == "< 16" and not flat.accepted
    assert flat.b_crit == pytest.approx(2.0, rel=1e-6)
    two = batchscale.fit_critical_batch({"batch_size": [8, 16], "steps": [100, 60]})
    assert two.report is None and math.isnan(two.b_crit) and "not estimable" in str(two)


@pytest.mark.parametrize("frame, kwargs, message", [
    ({"bs": [8, 16], "steps": [10, 5]}, {}, r"no column 'batch_size' \(columns: bs, steps\)"),
    ({"batch_size": [8, 8, 16], "steps": [10, 11, 5]}, {}, "batch size 8 has more than one row: name the column"),
    ({"batch_size": [8, 16], "steps": [np.inf, 5]}, {}, "base batch size 8 .* never reached"),
    ({"batch_size": [8, 16], "steps": [10, -1]}, {}, "'steps' must be positive"),
    ({"batch_size": [8, 16], "steps": [10, 5]}, {"base_batch": 32}, "base batch size 32 is not among"),
])
def test_a_bad_table_names_the_problem(frame, kwargs, message):
    for function in (batchscale.fit_critical_batch, batchscale.speedup_table):
        with pytest.raises(ConfigError, match=message):
            function(frame, **kwargs)


# ---- a study's folder ----

def small_cube() -> xr.Dataset:
    cube = xr.Dataset({"train_loss": (("strategy", "batch_size", "seed", "step"), np.ones((1, 2, 1, 3)))},
                      coords={"strategy": ["lsr"], "batch_size": [8, 16], "seed": [0], "step": [0, 1, 2]},
                      attrs={"study": "s", "study_config_json": json.dumps({"base_batch": 8})})
    cube.attrs["content_sha256"] = cube_content_hash(cube)
    return cube


def test_open_study_reads_with_the_workflows_checks(tmp_path):
    folder = tmp_path / "s"
    analyze_external(_write(tmp_path / "sweep.csv", steps_frame()), folder, bootstrap={"samples": 50})
    write_cube(small_cube(), folder / "cube.nc")
    write_record(folder, [folder / "speedup.csv", folder / "critical_batch.json"], "s", "",
                 small_cube().attrs["content_sha256"])
    study = batchscale.open_study(folder)
    assert study.name == "s" and study.config == {"base_batch": 8}
    assert float(study.cube["train_loss"].sum()) == 6.0
    assert study.speedup["batch_size"].nunique() == 6
    with pytest.raises(KeyError, match="strategy 'lsr' is not in critical_batch.json"):
        study.critical("lsr")
    with pytest.raises(KeyError, match="'accuracy_md' is not a study table"):
        study.table("accuracy_md")
    with pytest.raises(StageInputError, match="no such table"):
        study.table("tuned")

    edited = batchscale.open_study(folder)
    (folder / "speedup.csv").write_text((folder / "speedup.csv").read_text().replace("external", "edited"))
    with pytest.raises(StageInputError, match="changed since the analysis wrote it"):
        edited.speedup
    other = small_cube().assign(train_loss=lambda c: c["train_loss"] * 2)
    other.attrs["content_sha256"] = cube_content_hash(other)
    write_cube(other, folder / "cube.nc")
    with pytest.raises(StageInputError, match="not the cube the tables"):
        batchscale.open_study(folder).cube
    with pytest.raises(StageInputError, match="not a study's results folder"):
        batchscale.open_study(tmp_path / "empty")


def _write(path, frame: pd.DataFrame):
    frame.to_csv(path, index=False)
    return path


# ---- the package face ----

def test_the_face_exposes_the_api_lazily_and_a_training_job_loads_no_pandas():
    assert batchscale.fit_critical_batch is api.fit_critical_batch
    assert {"fit_critical_batch", "speedup_table", "open_study"} <= set(batchscale.__all__) & set(dir(batchscale))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        batchscale.nope  # noqa: B018
    probe = ("import sys, batchscale, batchscale.engine.pack; "
             "print(sorted(m for m in ('pandas', 'scipy', 'xarray') if m in sys.modules))")
    done = subprocess.run([str(VENV_BIN / "python"), "-c", probe], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": str(VENV_BIN)})
    assert done.stdout.strip() == "[]"
    assert sys.modules.get("batchscale.analysis.api") is api
