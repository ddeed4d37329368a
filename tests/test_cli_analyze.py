"""`batchscale analyze` on sweeps run elsewhere: tables, critical batch and figures from a CSV."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd


def _analyze(*args):
    return subprocess.run([sys.executable, "-m", "batchscale", "analyze", *map(str, args)],
                          capture_output=True, text=True)


def test_steps_to_target_csv_gives_tables_fit_and_figures(tmp_path):
    # k(m) = S_min (1 + B_crit/m) with S_min = 100 and B_crit = 256, three seeds with 2% noise
    rng = np.random.default_rng(0)
    rows = [{"batch_size": m, "seed": s, "steps": 100 * (1 + 256 / m) * rng.normal(1, 0.02)}
            for m in (16, 32, 64, 128, 256, 512, 1024, 2048) for s in range(3)]
    csv = tmp_path / "sweep.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = tmp_path / "out"
    result = _analyze(csv, "--out", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "speedup.csv")
    assert len(table) == 8 and table.speedup.iloc[0] == 1.0
    critical = json.loads((out / "critical_batch.json").read_text())
    fit = next(iter(critical["strategies"].values()))["steps"]
    assert abs(fit["B_crit"]["estimate"] - 256) / 256 < 0.05
    assert abs(fit["S_min"]["estimate"] - 100) / 100 < 0.05
    assert sorted(p.suffix for p in out.glob("*.png")) and all(p.stat().st_size > 1000 for p in out.glob("*.png"))


def test_a_bad_csv_fails_in_one_line_naming_the_problem(tmp_path):
    csv = tmp_path / "bad.csv"
    pd.DataFrame({"batch_size": [32, 32], "step": [0, 10]}).to_csv(csv, index=False)
    result = _analyze(csv, "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "bad.csv" in result.stderr and "loss" in result.stderr
