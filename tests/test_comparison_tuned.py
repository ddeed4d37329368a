"""Comparisons of the `tuned` strategy: each study's tuned envelope (per batch size the fewest
steps any trial needs, a trial's steps being its mean over seeds) at its own eps and at one common eps.

Synthetic cubes with a trial dimension, whose training losses step through 1.0, 0.5 and 0.2 exactly at
evaluation points, so that k at eps 0.5 or 0.2 is an evaluation step (no interpolation) and every number
below is worked out by hand from the tables of first-hit indices."""

import json

import numpy as np
import pytest
import xarray as xr

from batchscale.analysis import comparison, tuned_tables
from batchscale.analysis.curves import SPEEDUP_COLUMNS, resolve_study
from batchscale.errors import ConfigError

STEPS = [1, 2, 4, 8, 16, 32, 64]  # evaluation points; index i -> step 2**i
SIZES = [4, 8, 16]
NEVER = None

# First index at which the loss is <= 0.2, per batch size -> per trial -> per seed (NEVER: stays at 0.5).
# The loss is 1.0 before index `hit_05`, 0.5 from there, 0.2 from `hit_02` on.
HIT_02 = {
    "A": {4: ((6, 6), (5, 6)), 8: ((5, 5), (4, 5)), 16: ((4, 4), (NEVER, NEVER))},
    "B": {4: ((5, 5), (6, 6)), 8: ((4, 4), (5, 5)), 16: ((3, 3), (4, 4))},
}
HIT_05 = {
    "A": {4: ((4, 4), (3, 4)), 8: ((3, 3), (2, 3)), 16: ((2, 2), (3, 3))},
    "B": {4: ((4, 4), (5, 5)), 8: ((3, 3), (4, 4)), 16: ((2, 2), (3, 3))},
}


def study_config(eps: float) -> dict:
    return {"base_batch": 4, "threshold": {"fixed": eps}, "metrics": ["train_loss"],
            "regimes": {"linear_efficiency": 0.8, "stagnation_gain": 0.1},
            "bootstrap": {"samples": 50, "confidence": 0.9}}


STUDIES = {"A": study_config(0.5), "B": study_config(0.2)}


def loss_curve(hit_05: int, hit_02) -> np.ndarray:
    index = np.arange(len(STEPS))
    loss = np.where(index < hit_05, 1.0, 0.5)
    if hit_02 is not NEVER:
        loss = np.where(index >= hit_02, 0.2, loss)
    return loss


def make_cube(name: str, with_tuned: bool = True) -> xr.Dataset:
    """A cube with one fixed strategy (blr, reaching nothing below 1.0) and, optionally, two tuned trials
    at two seeds."""
    seeds, trials = [0, 1], [0, 1]
    flat = np.ones((1, len(SIZES), len(seeds), len(STEPS)))
    run_dims = ("strategy", "batch_size", "seed")
    data = {"train_loss": (run_dims + ("step",), flat),
            "status": (run_dims, np.full(flat.shape[:3], "completed", dtype=object))}
    coords = {"strategy": ["blr"], "batch_size": np.array(SIZES, dtype=np.int64),
              "seed": np.array(seeds, dtype=np.int64), "step": np.array(STEPS, dtype=np.int64)}
    if with_tuned:
        loss = np.array([[[loss_curve(HIT_05[name][m][t][s], HIT_02[name][m][t][s]) for s in seeds]
                          for t in trials] for m in SIZES])
        trial_dims = ("batch_size", "trial", "seed")
        data["tuned_train_loss"] = (trial_dims + ("step",), loss)
        data["tuned_status"] = (trial_dims, np.full(loss.shape[:3], "completed", dtype=object))
        data["tuned_lr"] = (("batch_size", "trial"), np.array([[0.01, 0.1]] * len(SIZES)))
        coords["trial"] = np.array(trials, dtype=np.int64)
    return xr.Dataset(data, coords=coords,
                      attrs={"study": name, "base_batch": 4, "study_config_json": json.dumps(STUDIES[name])})


def spec(choice: str) -> dict:
    return {"studies": ["A", "B"], "labels": ["sgd", "adamw"], "strategy": "tuned", "common_threshold": choice}


@pytest.fixture(scope="module")
def cubes():
    return {"A": make_cube("A"), "B": make_cube("B")}


def curve(table, label, scope):
    rows = table[(table["label"] == label) & (table["threshold_scope"] == scope)].sort_values("batch_size")
    return rows


def test_tuned_envelopes_at_own_and_smallest_common_eps(cubes):
    table = comparison.comparison_table(cubes, spec("smallest"), STUDIES)
    assert list(table.columns) == ["study", "label", *SPEEDUP_COLUMNS, *comparison.CRITICAL_COLUMNS]
    assert set(table["strategy"]) == {"tuned"}
    # A at its own 0.5: m=4 trial 0 (16+16)/2 = 16, trial 1 (8+16)/2 = 12 -> 12; m=8: 8 vs (4+8)/2 = 6 -> 6;
    # m=16: 4 vs 8 -> 4
    own_a = curve(table, "sgd", "study")
    assert own_a["threshold"].tolist() == [0.5] * 3
    assert own_a["k_mean"].tolist() == [12.0, 6.0, 4.0]
    assert own_a["speedup"].tolist() == pytest.approx([1.0, 2.0, 3.0])
    # B at its own 0.2: m=4 32 vs 64 -> 32; m=8 16 vs 32 -> 16; m=16 8 vs 16 -> 8
    own_b = curve(table, "adamw", "study")
    assert own_b["threshold"].tolist() == [0.2] * 3
    assert own_b["k_mean"].tolist() == [32.0, 16.0, 8.0]
    # the common eps is the smaller of 0.5 and 0.2
    common_a, common_b = curve(table, "sgd", "common"), curve(table, "adamw", "common")
    assert common_a["threshold"].tolist() == common_b["threshold"].tolist() == [0.2] * 3
    # A at 0.2: m=4 64 vs (32+64)/2 = 48 -> 48; m=8 32 vs 24 -> 24; m=16 16 vs never -> 16
    assert common_a["k_mean"].tolist() == [48.0, 24.0, 16.0]
    assert common_a["speedup"].tolist() == pytest.approx([1.0, 2.0, 3.0])
    assert common_b["k_mean"].tolist() == [32.0, 16.0, 8.0]
    assert common_b["speedup"].tolist() == pytest.approx([1.0, 2.0, 4.0])
    assert set(table["interval_kind"]) == {"bootstrap_seeds_trials"}
    assert set(table["n_reached"]) == {2} and set(table["status"]) == {"completed"}


def test_largest_common_eps(cubes):
    table = comparison.comparison_table(cubes, spec("largest"), STUDIES)
    common_b = curve(table, "adamw", "common")
    assert common_b["threshold"].tolist() == [0.5] * 3
    # B at 0.5: m=4 16 vs 32 -> 16; m=8 8 vs 16 -> 8; m=16 4 vs 8 -> 4
    assert common_b["k_mean"].tolist() == [16.0, 8.0, 4.0]
    assert curve(table, "sgd", "common")["k_mean"].tolist() == [12.0, 6.0, 4.0]


def test_critical_batch_is_the_tuned_analysis_own(cubes):
    """B_crit and its interval on the common rows are tuned_tables.tuned_at's entry at that eps."""
    table = comparison.comparison_table(cubes, spec("smallest"), STUDIES)
    study = resolve_study(cubes["A"], STUDIES["A"])
    entry = tuned_tables.tuned_at(cubes["A"], study, "train_loss", 0.2, "common", {"batch_size": 16})["entry"]
    row = curve(table, "sgd", "common").iloc[0]
    assert row["b_crit_interval_kind"] == "bootstrap_seeds_trials"
    # k = 48, 24, 16 at m = 4, 8, 16: speedup 3 at m/m0 = 4, so a finite B_crit
    assert np.isfinite(entry["B_crit"]["estimate"]) and row["b_crit"] == pytest.approx(entry["B_crit"]["estimate"])
    assert (row["b_crit_low"], row["b_crit_high"]) == pytest.approx((entry["B_crit"]["low"], entry["B_crit"]["high"]), nan_ok=True)


def test_a_study_without_tuned_is_refused(cubes):
    with pytest.raises(ConfigError, match=r"study 'B' has no strategy 'tuned' \(it has blr\)"):
        comparison.comparison_table({"A": cubes["A"], "B": make_cube("B", with_tuned=False)}, spec("smallest"),
                                    STUDIES)


def test_figure_draws_both_tuned_curves_with_their_critical_batch_at_the_common_eps(cubes):
    from batchscale.report.figures.comparison import comparison_figure

    table = comparison.comparison_table(cubes, spec("smallest"), STUDIES)
    fig = comparison_figure(table, title="sgd vs adamw")
    common_ax = fig.axes[1]
    assert common_ax.get_title().endswith("\u03b5 = 0.2")
    labels = [text.get_text() for text in common_ax.get_legend().get_texts()]
    for label in ("sgd", "adamw"):
        report = curve(table, label, "common")["b_crit_report"].iloc[0]
        assert any(text.startswith(f"{label} (B_crit {report}") for text in labels), (label, report, labels)
    drawn = [line for line in common_ax.get_lines() if line.get_gid() == "speedup"]
    assert [list(line.get_ydata()) for line in drawn] == [pytest.approx([1, 2, 3]), pytest.approx([1, 2, 4])]
