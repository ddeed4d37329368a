"""Local critical batch by branching: brackets, tolerance, smoothing and the branch lr rule by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from batchscale.analysis import branching as br


def test_branch_lr_rules():
    assert br.branch_lr(0.1, 4, "linear") == pytest.approx(0.4)
    assert br.branch_lr(0.1, 4, "sqrt") == pytest.approx(0.2)
    assert br.branch_lr(0.1, 1, "sqrt") == pytest.approx(0.1)
    with pytest.raises(ValueError):
        br.branch_lr(0.1, 2, "cubic")


def test_branch_steps_and_checkpoints():
    assert br.branch_steps(1024, 32) == 32
    assert br.branch_steps(1000, 3) == 333
    assert br.branch_steps(10, 64) == 1  # at least one step
    assert br.checkpoint_steps(1000, 4) == [1, 10, 100, 1000]
    assert br.checkpoint_steps(3, 5) == [1, 2, 3]  # rounding merges neighbours
    assert br.checkpoint_steps(50, 1) == [50]


def test_smoothed_loss():
    losses = [4.0, 3.0, 2.0, 1.0]
    assert br.smoothed_loss(losses, "last_mean", points=3) == pytest.approx(2.0)
    assert br.smoothed_loss(losses, "last_mean", points=10) == pytest.approx(2.5)
    # ema a = 0.5: 4 -> 3.5 -> 2.75 -> 1.875
    assert br.smoothed_loss(losses, "ema", ema_alpha=0.5) == pytest.approx(1.875)
    assert br.smoothed_loss(losses, "ema", ema_alpha=1.0) == pytest.approx(1.0)
    assert br.smoothed_loss([2.0, np.nan, 1.0], "last_mean", points=2) == pytest.approx(1.5)
    assert br.smoothed_loss([2.0, np.inf, np.nan], "last_mean") == math.inf
    assert math.isnan(br.smoothed_loss([np.nan], "ema"))


def test_within_tolerance_relative_and_absolute():
    assert br.within_tolerance(1.009, 1.0, 0.01, "relative")
    assert not br.within_tolerance(1.011, 1.0, 0.01, "relative")
    assert br.within_tolerance(1.04, 1.0, 0.05, "absolute")
    assert not br.within_tolerance(1.06, 1.0, 0.05, "absolute")
    assert not br.within_tolerance(math.inf, 1.0, 0.05, "absolute")


def branch_table(losses_per_checkpoint, base_batch=16):
    rows = []
    for examples, losses in losses_per_checkpoint.items():
        for k, loss in losses.items():
            rows.append({"checkpoint_examples": examples, "base_batch": base_batch, "k": k, "loss": loss})
    return pd.DataFrame(rows)


def test_local_critical_batch_brackets_per_checkpoint():
    table = branch_table({
        # k = 1, 2, 4 within 1% of 2.0 (<= 2.02), k = 8 not: [4 B, 8 B) = [64, 128)
        160: {1: 2.0, 2: 2.01, 4: 2.02, 8: 2.1, 16: 2.5},
        # every k within: >= 16 B = 256
        1600: {1: 1.0, 2: 1.0, 4: 1.005, 8: 1.009, 16: 1.0},
        # only k = 1: below 2 B = 32
        16000: {1: 0.5, 2: 0.6, 4: 0.7, 8: 0.8, 16: 0.9},
        # k = 4 fails, k = 8 passes again (noise): bracket stops at the first failure, marked non-monotone
        32000: {1: 0.4, 2: 0.401, 4: 0.5, 8: 0.403, 16: 0.6},
    })
    out = br.local_critical_table(table, tolerance=0.01, kind="relative").set_index("checkpoint_examples")
    assert list(out.columns) == list(br.LOCAL_CRITICAL_COLUMNS)[1:]
    assert out.loc[160, ["local_critical_batch", "upper_bracket", "bracket"]].tolist() == [64.0, 128.0, "interval"]
    assert out.loc[160, "bracket_text"] == "[64, 128)"
    assert out.loc[1600, "local_critical_batch"] == 256.0 and math.isinf(out.loc[1600, "upper_bracket"])
    assert out.loc[1600, ["bracket", "bracket_text"]].tolist() == ["at_least", ">= 256"]
    assert out.loc[16000, ["local_critical_batch", "upper_bracket", "bracket", "bracket_text"]].tolist() == \
        [16.0, 32.0, "below", "< 32"]
    assert out.loc[32000, ["local_critical_batch", "upper_bracket", "bracket"]].tolist() == [32.0, 64.0, "interval"]
    assert out.loc[32000, "non_monotone"] and not out.loc[160, "non_monotone"]
    assert out.loc[32000, "k_within"] == "1,2,8"
    assert out["reference_loss"].tolist() == [2.0, 1.0, 0.5, 0.4]


def test_absolute_tolerance_and_diverged_branches():
    table = branch_table({100: {1: 2.0, 2: 2.04, 4: math.inf, 8: 2.0}}, base_batch=8)
    row = br.local_critical_table(table, tolerance=0.05, kind="absolute").iloc[0]
    assert (row["local_critical_batch"], row["upper_bracket"], row["bracket"]) == (16.0, 32.0, "interval")
    relative = br.local_critical_table(table, tolerance=0.01, kind="relative").iloc[0]
    assert relative["bracket"] == "below"  # 2.04 > 2.0 * 1.01


def test_missing_reference_and_bad_tables():
    row = br.local_critical_batch({1: math.nan, 2: 1.0}, 4, 0.01)
    assert row["bracket"] == "missing" and math.isnan(row["local_critical_batch"])
    with pytest.raises(ValueError):
        br.local_critical_batch({2: 1.0, 4: 1.0}, 4, 0.01)
    with pytest.raises(ValueError):
        br.local_critical_table(pd.DataFrame({"k": [1]}), 0.01)


def test_schema_keys_are_valid_and_their_defaults_are_consistent():
    from pathlib import Path

    import jsonschema
    import yaml

    path = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]["study_partial"]["properties"]
    noise_defaults = {k: v["default"] for k, v in defs["noise_scale"]["properties"].items()}
    assert noise_defaults["batch_big"] == "auto" and noise_defaults["draws"] == "auto"  # issue 22
    assert 0 < noise_defaults["rel_error"] < 1 and noise_defaults["max_draws"] >= 3
    branching = {k: v["default"] for k, v in defs["branching"]["properties"].items()}
    assert 1 in branching["k"]
    assert branching["lr_rule"] in br.LR_RULES and branching["tolerance_kind"] in br.TOLERANCE_KINDS
    assert defs["branching"]["properties"]["smoothing"]["properties"]["kind"]["default"] in br.SMOOTHING_KINDS
    for name in ("noise_scale", "branching"):
        validator = jsonschema.Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{name}"})
        assert not list(validator.iter_errors({}))
        assert list(validator.iter_errors({"no_such_key": 1}))  # unknown keys are refused
