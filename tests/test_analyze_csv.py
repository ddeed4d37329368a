"""`batchscale analyze` on awkward CSVs (issue 21): every row accounted for, inf as never reached, intervals
that cannot exist said as such, and very many seeds in seconds."""

import time

import numpy as np
import pandas as pd
import pytest

from batchscale.analysis.external import AnalysisInputError, analyze_external, load_external_csv


def write(tmp_path, text, name="sweep.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_rows_with_an_empty_strategy_are_refused_by_line_number(tmp_path):
    path = write(tmp_path, "batch_size,steps,strategy\n8,100,a\n16,60,\n32,40,a\n8,100,b\n16,50, \n32,30,b\n")
    with pytest.raises(AnalysisInputError) as err:
        load_external_csv(path)
    message = str(err.value)
    assert "\n" not in message
    assert "column 'strategy' is empty in row(s) 3, 6 (line numbers, the header is line 1)" in message


def test_a_file_of_empty_rows_is_one_line(tmp_path):
    path = write(tmp_path, "batch_size,steps\n,\n , \n")
    with pytest.raises(AnalysisInputError, match=r"every one of its 2 row\(s\) is empty: there is no data") as err:
        load_external_csv(path)
    assert "\n" not in str(err.value)


def test_the_cli_prints_one_line_without_a_traceback(tmp_path, capsys):
    from batchscale.cli import main

    path = write(tmp_path, "batch_size,steps,strategy\n8,100,\n16,60,a\n")
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "row(s) 2" in err


def test_inf_steps_are_never_reached_not_completed(tmp_path):
    path = write(tmp_path, "batch_size,seed,steps\n8,0,100\n8,1,110\n16,0,60\n16,1,inf\n32,0,inf\n32,1,inf\n")
    speed = analyze_external(path, tmp_path / "out")["speedup"].set_index("batch_size")
    assert speed.loc[16, "k_mean"] == np.inf and speed.loc[16, "status"] == "not_reached"
    assert speed.loc[16, "n_reached"] == 1 and np.isnan(speed.loc[16, "speedup"])
    assert speed.loc[32, "n_reached"] == 0 and speed.loc[32, "regime"] == "not_reached"


def test_inf_loss_is_a_run_that_blew_up(tmp_path):
    from batchscale.analysis.external import traces_to_cube

    _kind, df = load_external_csv(write(tmp_path, "batch_size,step,loss\n8,1,2\n8,10,inf\n16,1,2\n16,10,1\n"))
    cube = traces_to_cube(df)
    assert cube["status"].sel(strategy="external", seed=0).values.tolist() == ["diverged", "completed"]


def test_seeds_that_all_agree_give_no_interval_not_a_zero_width_one(tmp_path):
    path = write(tmp_path, "batch_size,seed,steps\n8,0,100\n8,1,100\n16,0,50\n16,1,50\n32,0,30\n32,1,30\n")
    result = analyze_external(path, tmp_path / "out")
    speed = result["speedup"].set_index("batch_size")
    assert (speed["interval_kind"] == "none: one distinct value").all()
    assert speed["k_low"].isna().all() and speed["k_high"].isna().all()
    # at m0 the speedup is 1 by definition (same seeds): its [1, 1] is exact; elsewhere no interval
    assert speed.loc[16, "speedup_interval_kind"] == "none: one distinct value"
    assert np.isnan(speed.loc[16, "speedup_low"]) and speed.loc[16, "speedup"] == 2.0
    b_crit = result["critical_batch"]["strategies"]["external"]["steps"]["B_crit"]
    assert b_crit["interval_kind"] == "none: one distinct value" and b_crit["low"] is None


def test_one_seed_has_no_interval(tmp_path):
    path = write(tmp_path, "batch_size,steps\n8,100\n16,50\n32,30\n")
    speed = analyze_external(path, tmp_path / "out")["speedup"]
    assert (speed["interval_kind"] == "none").all() and speed["k_low"].isna().all()


def test_125000_seeds_per_batch_size_in_seconds(tmp_path):
    rng = np.random.default_rng(0)
    n = 125_000
    frames = [pd.DataFrame({"batch_size": m, "seed": np.arange(n),
                            "steps": 1000.0 * (1 + 32 / m) * rng.lognormal(0.0, 0.1, n)}) for m in (8, 16, 32, 64)]
    path = tmp_path / "big.csv"
    pd.concat(frames).to_csv(path, index=False)
    start = time.perf_counter()
    result = analyze_external(path, tmp_path / "out")
    assert time.perf_counter() - start < 60  # seconds, not the minutes a 1000-resample bootstrap takes
    speed = result["speedup"].set_index("batch_size")
    assert (speed["n_seeds"] == n).all()
    assert (speed["interval_kind"] == "normal_approximation").all()
    # the mean of a lognormal(0, 0.1) is exp(0.005); k(8) = 1000 x 5 x that, its interval ~ +-0.1 % wide
    assert speed.loc[8, "k_mean"] == pytest.approx(5000 * np.exp(0.005), rel=2e-3)
    assert speed.loc[8, "k_low"] < speed.loc[8, "k_mean"] < speed.loc[8, "k_high"]
    assert speed.loc[8, "k_high"] / speed.loc[8, "k_low"] - 1 < 0.01
    b_crit = result["critical_batch"]["strategies"]["external"]["steps"]["B_crit"]
    assert b_crit["estimate"] == pytest.approx(32.0, rel=0.02)  # S_min (1 + 32/m) with the same noise
    assert b_crit["interval_kind"] == "normal_bootstrap" and b_crit["low"] < 32.0 * 1.02
