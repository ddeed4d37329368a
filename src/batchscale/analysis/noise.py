"""The gradient noise scale over training, at the loss target, and beside the measured critical batch.

Small pure functions over tables. Inputs come from the cube (dims strategy, batch_size, seed, step; the
trace datasets noise_g2 and noise_trace_sigma, from the two-batch estimator, and noise_g2_exact and
noise_trace_sigma_exact, NaN where not computed; see batchscale.engine.noise_points) or from a tidy table with one row per
run x evaluation point.

- `noise_points(cube)`: the cube's noise variables as a tidy table.
- `b_simple_over_training(points, window)`: B_simple per run and evaluation point, the ratio of the
  centred-window means of tr Sigma and |G|^2 (windowed_noise_scale below); the exact values
  use the same window, so both columns smooth alike.
- `b_simple_at_k(steps, b_simple, k)`: B_simple where a run reaches eps, interpolated at k(eps) linearly in
  log(step) (as k itself is; linearly in step when the bracket starts at step 0).
- `b_simple_at_threshold(over_training, k_runs)`: per strategy x batch size, over seeds.
- `noise_vs_critical(at_threshold, critical)`: the table beside the measured critical batch, with the
  ratio B_crit / B_simple.

Units: steps (weight updates), examples, and B_simple in examples (tr Sigma / |G|^2).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchscale.analysis.curves import k_at


def noise_scale(g2, trace_sigma):
    """The simple noise scale B_simple = tr Sigma / |G|^2.

    Args:
      g2: |G|^2 estimates.
      trace_sigma: tr Sigma estimates, the same shape.

    Returns:
      B_simple (examples); NaN where |G|^2 <= 0 (the estimate is meaningless there).
    """
    g2 = np.asarray(g2, dtype=float)
    trace_sigma = np.asarray(trace_sigma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g2 > 0, trace_sigma / np.where(g2 > 0, g2, 1.0), np.nan)


def windowed_noise_scale(g2, trace_sigma, window: int, centred: bool = True):
    """B_simple per evaluation point as the ratio of window means.

    At point i the centred window is points i - (window-1)//2 .. i + window//2 (fewer at either end; a
    trailing one, centred False, is i-window+1..i), so the estimate at i is not biased towards earlier
    training while B_simple grows; non-finite entries (points not measured) are left out of both means.

    Args:
      g2: |G|^2 per evaluation point of one run (1-D).
      trace_sigma: tr Sigma at the same points.
      window: the number of points averaged.
      centred: a centred window (the default) or a trailing one.

    Returns:
      (b_simple, invalid): b_simple[i] = mean(trace_sigma) / mean(g2) over the window; NaN with invalid[i]
      True where the window's mean |G|^2 is <= 0 (the estimate exists but is meaningless: noise swamped the
      signal); NaN with invalid[i] False where the window holds no finite pair.

    Raises:
      ValueError: for a window below 1 or arrays of different shapes.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    g2 = np.asarray(g2, dtype=float)
    trace_sigma = np.asarray(trace_sigma, dtype=float)
    if g2.shape != trace_sigma.shape or g2.ndim != 1:
        raise ValueError("g2 and trace_sigma must be 1-D arrays of the same length")
    finite = np.isfinite(g2) & np.isfinite(trace_sigma)
    b_simple = np.full(g2.shape, np.nan)
    invalid = np.zeros(g2.shape, dtype=bool)
    before, after = ((window - 1) // 2, window // 2) if centred else (window - 1, 0)
    for i in range(g2.size):
        lo, hi = max(0, i - before), i + after + 1
        keep = finite[lo:hi]
        if not keep.any():
            continue  # nothing measured in the window: NaN, but not flagged (no estimate was made)
        mean_g2 = g2[lo:hi][keep].mean()
        mean_trace = trace_sigma[lo:hi][keep].mean()
        if mean_g2 > 0:
            b_simple[i] = mean_trace / mean_g2
        else:
            invalid[i] = True
    return b_simple, invalid


RUN_KEYS = ("strategy", "batch_size", "seed")
NOISE_VARIABLES = {"noise_g2": "g2", "noise_trace_sigma": "trace_sigma",
                   "noise_g2_exact": "g2_exact", "noise_trace_sigma_exact": "trace_sigma_exact"}

OVER_TRAINING_COLUMNS = (
    "strategy", "batch_size", "seed", "step", "examples_seen", "g2", "trace_sigma", "b_simple",
    "window_invalid", "b_simple_exact", "run_invalid_fraction",
)
AT_THRESHOLD_COLUMNS = (
    "strategy", "batch_size", "k_mean_steps", "b_simple_at_eps", "b_simple_at_eps_min", "b_simple_at_eps_max",
    "b_simple_exact_at_eps", "n_seeds", "n_at_eps",
)
VERSUS_CRITICAL_COLUMNS = (
    "strategy", "metric", "batch_size", "k_mean_steps", "b_simple_at_eps", "b_simple_at_eps_min",
    "b_simple_at_eps_max", "b_simple_exact_at_eps", "n_at_eps", "B_crit", "B_crit_low", "B_crit_high",
    "B_crit_interval_kind", "B_crit_report", "B_crit_overhead", "ratio_B_crit_over_B_simple",
    "ratio_B_crit_overhead_over_B_simple", "ratio_B_crit_over_B_simple_exact",
)
UNITS = {
    "step": "steps", "examples_seen": "examples", "k_mean_steps": "steps",
    "g2": "(loss/parameter)^2", "trace_sigma": "(loss/parameter)^2 x examples",
    "b_simple": "examples", "b_simple_exact": "examples", "run_invalid_fraction": "dimensionless", "b_simple_at_eps": "examples",
    "b_simple_at_eps_min": "examples", "b_simple_at_eps_max": "examples", "b_simple_exact_at_eps": "examples",
    "B_crit": "examples per step", "B_crit_low": "examples per step", "B_crit_high": "examples per step",
    "B_crit_overhead": "examples per step", "ratio_B_crit_over_B_simple": "dimensionless",
    "ratio_B_crit_overhead_over_B_simple": "dimensionless", "ratio_B_crit_over_B_simple_exact": "dimensionless",
}


def noise_points(cube) -> pd.DataFrame:
    """The cube's noise variables as a tidy table.

    Args:
      cube: a cube-like xarray Dataset with noise_g2 and noise_trace_sigma.

    Returns:
      columns strategy, batch_size, seed, step, examples_seen, g2, trace_sigma, g2_exact, trace_sigma_exact;
      absent exact variables become NaN columns and an absent examples_seen is step x batch_size. Rows
      where the run has no two-batch point are dropped.

    Raises:
      ValueError: when the cube traces no noise scale.
    """
    if "noise_g2" not in cube or "noise_trace_sigma" not in cube:
        raise ValueError("the cube has no noise_g2 / noise_trace_sigma: was noise_scale enabled?")
    names = [n for n in NOISE_VARIABLES if n in cube]
    if "examples_seen" in cube:
        names.append("examples_seen")
    frame = cube[names].to_dataframe().reset_index().rename(columns=NOISE_VARIABLES)
    for column in NOISE_VARIABLES.values():
        if column not in frame:
            frame[column] = np.nan
    if "examples_seen" not in frame:
        frame["examples_seen"] = frame["step"] * frame["batch_size"]
    frame = frame[np.isfinite(frame["g2"]) & np.isfinite(frame["trace_sigma"])]
    columns = list(RUN_KEYS) + ["step", "examples_seen", "g2", "trace_sigma", "g2_exact", "trace_sigma_exact"]
    return frame[columns].sort_values(list(RUN_KEYS) + ["step"]).reset_index(drop=True)


def b_simple_over_training(points: pd.DataFrame, window: int) -> pd.DataFrame:
    """B_simple per run and evaluation point.

    Args:
      points: a tidy table as `noise_points` gives it.
      window: the centred window of `windowed_noise_scale`, over each run's own points in step order.

    Returns:
      OVER_TRAINING_COLUMNS, the exact values (where traced) smoothed over the same window;
      run_invalid_fraction is the run's fraction of points whose window is invalid (mean |G|^2 <= 0).
    """
    frames = []
    for _, run in points.sort_values(list(RUN_KEYS) + ["step"]).groupby(list(RUN_KEYS), sort=True):
        b_simple, invalid = windowed_noise_scale(run["g2"].to_numpy(float), run["trace_sigma"].to_numpy(float), window)
        out = run.copy()
        out["b_simple"], out["window_invalid"] = b_simple, invalid
        out["run_invalid_fraction"] = float(invalid.mean()) if invalid.size else float("nan")
        if "g2_exact" in run and "trace_sigma_exact" in run:
            out["b_simple_exact"] = windowed_noise_scale(run["g2_exact"].to_numpy(float),
                                                         run["trace_sigma_exact"].to_numpy(float), window)[0]
        else:
            out["b_simple_exact"] = np.nan
        frames.append(out)
    if not frames:
        return pd.DataFrame(columns=list(OVER_TRAINING_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(OVER_TRAINING_COLUMNS)]


def b_simple_at_k(steps, b_simple, k: float) -> float:
    """B_simple at step k, interpolated linearly in log(step) between the two bracketing points.

    A bracket starting at step 0 interpolates linearly in step (log 0 is undefined), as k itself does.

    Args:
      steps: the run's evaluation steps.
      b_simple: B_simple there (non-finite points are left out first).
      k: the step, typically k(eps).

    Returns:
      the point's value when k is an evaluation step; NaN when k is not finite (the run never reached eps),
      lies outside the points, or there are none.
    """
    steps = np.asarray(steps, dtype=float).ravel()
    values = np.asarray(b_simple, dtype=float).ravel()
    keep = np.isfinite(steps) & np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if not math.isfinite(k) or steps.size == 0:
        return float("nan")
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    if k < steps[0] or k > steps[-1]:
        return float("nan")
    hit = np.flatnonzero(steps == k)
    if hit.size:
        return float(values[hit[0]])
    b = int(np.searchsorted(steps, k))
    s_a, s_b = steps[b - 1], steps[b]
    t = (k - s_a) / (s_b - s_a) if s_a <= 0 else (math.log(k) - math.log(s_a)) / (math.log(s_b) - math.log(s_a))
    return float(values[b - 1] + t * (values[b] - values[b - 1]))


def b_simple_at_threshold(over_training: pd.DataFrame, k_runs: pd.DataFrame) -> pd.DataFrame:
    """B_simple at k(eps) per strategy and batch size, over seeds.

    Args:
      over_training: `b_simple_over_training`.
      k_runs: columns strategy, batch_size, seed, k (steps; inf when the run never reached eps, NaN when
        missing), e.g. `steps.k_per_run(...).to_dataframe().reset_index()`.

    Returns:
      AT_THRESHOLD_COLUMNS: b_simple_at_eps is the mean over the seeds where it is finite (n_at_eps of
      n_seeds), with their min and max beside it; k_mean_steps is the mean k over the same seeds.
    """
    rows = []
    grouped = {key: run for key, run in over_training.groupby(list(RUN_KEYS))}
    per_run = []
    for record in k_runs.itertuples(index=False):
        key = (record.strategy, record.batch_size, record.seed)
        run = grouped.get(key)
        k = float(record.k)
        at = exact = float("nan")
        if run is not None:
            at = b_simple_at_k(run["step"], run["b_simple"], k)
            exact = b_simple_at_k(run["step"], run["b_simple_exact"], k)
        per_run.append({"strategy": record.strategy, "batch_size": record.batch_size, "k": k, "at": at,
                        "exact": exact})
    frame = pd.DataFrame(per_run, columns=["strategy", "batch_size", "k", "at", "exact"])
    for (strategy, batch_size), group in frame.groupby(["strategy", "batch_size"], sort=False):
        ok = group[np.isfinite(group["at"])]
        exact = group["exact"][np.isfinite(group["exact"])]
        rows.append({
            "strategy": strategy, "batch_size": int(batch_size),
            "k_mean_steps": float(ok["k"].mean()) if len(ok) else float("nan"),
            "b_simple_at_eps": float(ok["at"].mean()) if len(ok) else float("nan"),
            "b_simple_at_eps_min": float(ok["at"].min()) if len(ok) else float("nan"),
            "b_simple_at_eps_max": float(ok["at"].max()) if len(ok) else float("nan"),
            "b_simple_exact_at_eps": float(exact.mean()) if len(exact) else float("nan"),
            "n_seeds": int(np.isfinite(group["k"]).sum() + np.isinf(group["k"]).sum()),
            "n_at_eps": int(len(ok)),
        })
    return pd.DataFrame(rows, columns=list(AT_THRESHOLD_COLUMNS))


def _estimate(value) -> float:
    """A number from a critical_batch.json value: a float, None (-> NaN) or {"estimate": ...}."""
    if isinstance(value, dict):
        value = value.get("estimate")
    return float("nan") if value is None else float(value)


def _overhead(entry: dict, overhead_key: str) -> float:
    """The overhead-based critical batch of a critical_batch.json entry: `overhead_key` holds a number, an
    {"estimate": ...} mapping, or (as `curves.critical_entry` writes it, key overhead_critical_batch) a mapping whose
    `direct` estimate (read off the measured k(m), not the fit) is taken."""
    value = entry.get(overhead_key)
    if isinstance(value, dict) and "direct" in value:
        value = value["direct"]
    return _estimate(value)


def critical_from_document(document: dict, metric: str, overhead_key: str = "overhead_critical_batch") -> pd.DataFrame:
    """The measured critical batch of each strategy, from a critical_batch.json document.

    Args:
      document: the document (entries of `curves.critical_entry`).
      metric: the metric.
      overhead_key: the entry's key of the overhead-based critical batch.

    Returns:
      columns strategy, metric, B_crit, B_crit_low, B_crit_high, B_crit_interval_kind, B_crit_report (the
      document's text to quote: ``< 4`` or ``> 128`` when B_crit lies outside the measured range, a bound
      rather than an estimate) and B_crit_overhead (NaN where the document has none).
    """
    rows = []
    for strategy, metrics in document.get("strategies", {}).items():
        entry = metrics.get(metric)
        if entry is None:
            continue
        fit = entry.get("B_crit") or {}
        report = fit.get("report")
        rows.append({"strategy": strategy, "metric": metric, "B_crit": _estimate(fit.get("estimate")),
                     "B_crit_low": _estimate(fit.get("low")), "B_crit_high": _estimate(fit.get("high")),
                     "B_crit_interval_kind": fit.get("interval_kind") or entry.get("interval_kind") or "none",
                     "B_crit_report": report if report is not None else "",
                     "B_crit_overhead": _overhead(entry, overhead_key)})
    return pd.DataFrame(rows, columns=["strategy", "metric", "B_crit", "B_crit_low", "B_crit_high",
                                       "B_crit_interval_kind", "B_crit_report", "B_crit_overhead"])


def _ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def noise_vs_critical(at_threshold: pd.DataFrame, critical: pd.DataFrame) -> pd.DataFrame:
    """B_simple at eps beside the measured critical batch.

    Args:
      at_threshold: `b_simple_at_threshold`.
      critical: one row per strategy (`critical_from_document`); strategies absent from it get NaN.

    Returns:
      VERSUS_CRITICAL_COLUMNS (units in UNITS): the ratios B_crit / B_simple and B_crit_overhead / B_simple
      say how far the noise scale at eps under- (ratio > 1) or over-estimates (ratio < 1) the measured
      critical batch; NaN where B_simple <= 0.
    """
    table = at_threshold.merge(critical, on="strategy", how="left")
    if "metric" not in table:
        table["metric"] = np.nan
    table["ratio_B_crit_over_B_simple"] = _ratio(table["B_crit"], table["b_simple_at_eps"])
    table["ratio_B_crit_overhead_over_B_simple"] = _ratio(table["B_crit_overhead"], table["b_simple_at_eps"])
    table["ratio_B_crit_over_B_simple_exact"] = _ratio(table["B_crit"], table["b_simple_exact_at_eps"])
    return table[list(VERSUS_CRITICAL_COLUMNS)].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# A study's noise tables


def k_runs_from_cube(cube, thresholds: dict, metric: str = "train_loss") -> pd.DataFrame:
    """k of every run at its strategy's eps, as the speedup table measures it (`curves.k_at`).

    Args:
      cube: a study cube.
      thresholds: {strategy: eps} (None: skipped).
      metric: the metric.

    Returns:
      columns strategy, batch_size, seed, k.
    """
    rows = []
    for strategy, eps in thresholds.items():
        if eps is None or strategy not in [str(s) for s in cube["strategy"].values]:
            continue
        sizes, k, _, _ = k_at(cube, strategy, metric, float(eps))
        for i, size in enumerate(sizes):
            for j, seed in enumerate(cube["seed"].values):
                rows.append({"strategy": strategy, "batch_size": int(size), "seed": int(seed), "k": float(k[i, j])})
    return pd.DataFrame(rows, columns=["strategy", "batch_size", "seed", "k"])


def study_noise_tables(cube, critical_document: dict, window: int, metric: str = "train_loss") -> dict:
    """A study's noise tables.

    Args:
      cube: a study cube.
      critical_document: its critical_batch.json (each strategy's own eps and critical batch).
      window: the centred window of B_simple.
      metric: the metric whose eps and critical batch are used.

    Returns:
      {"noise_over_training": B_simple per run and point (OVER_TRAINING_COLUMNS), "noise_scale": B_simple at
      eps beside the measured critical batch (VERSUS_CRITICAL_COLUMNS)}; both with their columns and no rows
      when the cube holds no noise scale (noise_scale.enabled false), so every study writes the same files.
    """
    if "noise_g2" not in cube or "noise_trace_sigma" not in cube:
        return {"noise_over_training": pd.DataFrame(columns=list(OVER_TRAINING_COLUMNS)),
                "noise_scale": pd.DataFrame(columns=list(VERSUS_CRITICAL_COLUMNS))}
    over = b_simple_over_training(noise_points(cube), window)
    thresholds = {strategy: (metrics.get(metric) or {}).get("threshold")
                  for strategy, metrics in critical_document.get("strategies", {}).items()}
    at = b_simple_at_threshold(over, k_runs_from_cube(cube, thresholds, metric))
    return {"noise_over_training": over,
            "noise_scale": noise_vs_critical(at, critical_from_document(critical_document, metric))}
