"""`batchscale analyze` on sweeps run elsewhere: tables, critical batch and figures from a CSV, its headline
on stdout, and every bad option or file refused in one line before any work."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


def _analyze(*args):
    return subprocess.run([sys.executable, "-m", "batchscale", "analyze", *map(str, args)],
                          capture_output=True, text=True)


def _steps_csv(path, s_min=100.0, b_crit=256.0, seeds=3):
    rng = np.random.default_rng(0)
    rows = [{"batch_size": m, "seed": s, "steps": s_min * (1 + b_crit / m) * rng.normal(1, 0.02)}
            for m in (16, 32, 64, 128, 256, 512, 1024, 2048) for s in range(seeds)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_steps_to_target_csv_gives_tables_fit_figures_and_a_headline(tmp_path):
    # k(m) = S_min (1 + B_crit/m) with S_min = 100 and B_crit = 256, three seeds with 2% noise
    csv = _steps_csv(tmp_path / "sweep.csv")
    out = tmp_path / "out"
    result = _analyze(csv, "--out", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "speedup.csv")
    assert len(table) == 8 and table.speedup.iloc[0] == 1.0 and (table.interval_kind == "student_t").all()
    critical = json.loads((out / "critical_batch.json").read_text())
    fit = next(iter(critical["strategies"].values()))["steps"]
    assert abs(fit["B_crit"]["estimate"] - 256) / 256 < 0.05
    assert abs(fit["S_min"]["estimate"] - 100) / 100 < 0.05
    assert fit["B_crit"]["interval_kind"] == "student_t" and fit["fit_meaningful"] is True
    assert sorted(p.suffix for p in out.glob("*.png")) and all(p.stat().st_size > 1000 for p in out.glob("*.png"))
    # the headline: B_crit and S_min with their intervals and kind, and the regimes
    head = result.stdout.splitlines()[0]
    assert head.startswith("external steps: B_crit = ")
    b = fit["B_crit"]
    assert f"B_crit = {b['estimate']:.4g} [{b['low']:.4g}, {b['high']:.4g}] (student t)" in head
    assert f"S_min = {fit['S_min']['estimate']:.4g} [" in head and "log-RMSE" in head
    assert "regimes: linear up to" in result.stdout and "stagnation from" in result.stdout
    assert "overhead-based critical batch (20% over linear)" in result.stdout


def test_one_series_gets_a_residual_bootstrap_and_a_bound_is_printed_as_one(tmp_path):
    csv = tmp_path / "one.csv"
    # B_crit = 5000, far above the largest batch size 2048: reported as "> 2048"
    rows = [{"batch_size": m, "steps": 100 * (1 + 5000 / m)} for m in (16, 32, 64, 128, 256, 512, 1024, 2048)]
    pd.DataFrame(rows).to_csv(csv, index=False)
    result = _analyze(csv, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "B_crit > 2048" in result.stdout and "(residual bootstrap)" in result.stdout
    fit = json.loads((tmp_path / "out" / "critical_batch.json").read_text())["strategies"]["external"]["steps"]
    assert fit["B_crit"]["bound"] == "above_range" and fit["fit_meaningful"] is False
    table = pd.read_csv(tmp_path / "out" / "speedup.csv")
    assert (table.interval_kind == "none").all() and table.k_low.isna().all()  # never low = high = estimate


def _one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("batchscale: error: ")
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def test_a_bad_csv_fails_in_one_line_naming_the_problem(tmp_path):
    csv = tmp_path / "bad.csv"
    pd.DataFrame({"batch_size": [32, 32], "step": [0, 10]}).to_csv(csv, index=False)
    _one_line_error(_analyze(csv, "--out", tmp_path / "out"), "bad.csv", "loss")


@pytest.mark.parametrize("threshold, fragments", [
    ('{"fixed": 0.1', ["--threshold", "not valid JSON"]),
    ('{"fixed": 0}', ["--threshold", "value > 0"]),
    ('{"fixed": -2}', ["--threshold", "value > 0"]),
    ("fixed:-1", ["--threshold", "value > 0"]),
    ('{"quantile_of_largest": 1.5}', ["--threshold", "0 < q < 1"]),
    ("median", ["--threshold", "not allowed"]),
])
def test_bad_threshold_options(tmp_path, threshold, fragments):
    csv = _steps_csv(tmp_path / "sweep.csv")
    result = _analyze(csv, "--out", tmp_path / "out", "--threshold", threshold)
    _one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_out_naming_an_existing_file_or_an_unwritable_place(tmp_path):
    csv = _steps_csv(tmp_path / "sweep.csv")
    existing = tmp_path / "taken.txt"
    existing.write_text("keep me")
    _one_line_error(_analyze(csv, "--out", existing), "--out", "existing file")
    assert existing.read_text() == "keep me"
    _one_line_error(_analyze(csv, "--out", existing / "below"), "--out", "cannot write there")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            _one_line_error(_analyze(csv, "--out", locked / "out"), "--out", "cannot write there")
        finally:
            locked.chmod(0o700)


def test_all_infinite_steps_and_huge_batch_sizes(tmp_path):
    csv = tmp_path / "inf.csv"
    csv.write_text("batch_size,steps\n16,inf\n32,inf\n64,inf\n")
    _one_line_error(_analyze(csv, "--out", tmp_path / "a"), "inf.csv", "every value of column 'steps' is inf")
    csv = tmp_path / "base.csv"
    csv.write_text("batch_size,steps\n16,inf\n32,50\n64,30\n")
    _one_line_error(_analyze(csv, "--out", tmp_path / "b"), "base batch size 16", "never reached")
    csv = tmp_path / "huge.csv"
    csv.write_text("batch_size,steps\n16,100\n99999999999999999999,50\n")
    _one_line_error(_analyze(csv, "--out", tmp_path / "c"), "huge.csv", "beyond the 64-bit integer range")
    csv = tmp_path / "huge2.csv"
    csv.write_text("batch_size,steps\n16,100\n1e300,50\n")
    _one_line_error(_analyze(csv, "--out", tmp_path / "d"), "huge2.csv", "64-bit")
    _one_line_error(_analyze(tmp_path / "absent.csv", "--out", tmp_path / "e"), "absent.csv", "does not exist")
    _one_line_error(_analyze(_steps_csv(tmp_path / "s.csv"), "--out", tmp_path / "f", "--base-batch", "0"),
                    "--base-batch", "positive")


# ----------------------------------------------------------------------------- the CSV format, documented


def _help_example(help_text: str) -> str:
    """The indented CSV lines after the help's "Example" line."""
    lines = help_text.split("Example", 1)[1].splitlines()[1:]
    return "\n".join(line.strip() for line in lines if line.strip()) + "\n"


def test_analyze_help_states_the_csv_format():
    result = subprocess.run([sys.executable, "-m", "batchscale", "analyze", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for layout in ("batch_size,step,loss[,seed][,strategy]", "batch_size,steps[,seed][,strategy]"):
        assert layout in text
    for column in ("batch_size", "seed", "strategy", "k_mean", "interval_kind", "n_seeds", "speedup",
                   "efficiency", "regime", "status"):
        assert column in text, column
    assert "write inf in steps for a" in text and "not_reached" in text and '"external"' in text


def test_the_documented_example_gives_the_documented_never_reached_row(tmp_path):
    from conftest import REPO

    help_text = subprocess.run([sys.executable, "-m", "batchscale", "analyze", "--help"],
                               capture_output=True, text=True).stdout
    example = _help_example(help_text)
    readme = (REPO / "README.md").read_text().split("## Analysing a sweep run elsewhere", 1)[1]
    assert "```\n" + example + "```" in readme  # the README shows the same example
    csv = tmp_path / "example.csv"
    csv.write_text(example)
    result = _analyze(csv, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "out" / "speedup.csv").set_index("batch_size")
    assert list(table.index) == [16, 32, 64] and (table.metric == "steps").all()
    assert (table.threshold_rule == "given").all() and table.threshold.isna().all()
    assert table.k_mean[16] == 1050 and table.k_mean[32] == 540  # means over the two seeds
    assert table.speedup[32] == pytest.approx(1050 / 540)
    never = table.loc[64]  # seed 1 wrote inf: kept as a row, k_mean inf, no speedup
    assert np.isposinf(never.k_mean) and np.isposinf(never.examples_to_threshold)
    assert (never.n_seeds, never.n_reached) == (2, 1)
    assert np.isnan(never.speedup) and np.isnan(never.efficiency)
    assert never.regime == "not_reached" and never.status == "not_reached"
    assert not (tmp_path / "out" / "speedup_common.csv").exists()  # traces only
