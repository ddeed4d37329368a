"""The Python API's measurements: the critical batch size and the speedup table of a DataFrame of steps to a
target per batch size (and seed).

They run the code `batchscale analyze` runs on a steps-to-target CSV, and the workflow on a study's curves:
the table is checked by `external.check_external_frame`, then `external.steps_tables` gives the speedup rows
(`curves.speedup_rows`) and the critical-batch entry (`curves.critical_entry`: the censored log-space fit
of `critical.fit_critical_batch`, its interval, bound and overhead-based critical batch). So a number here
equals the number the workflow writes for the same k(m); nothing is computed twice. `CriticalBatch.from_entry`
reads an entry of a study's critical_batch.json into the same object (`batchscale.open_study`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from batchscale.analysis.external import (
    AnalysisInputError,
    check_base_batch,
    check_external_frame,
    external_study,
    steps_tables,
)

# speedup_table's columns: speedup.csv's (batchscale.analysis.study) without those naming the curve, with
# the efficiency's interval beside it
SPEEDUP_TABLE_COLUMNS = (
    "batch_size", "base_batch", "k_mean", "k_low", "k_high", "interval_kind", "n_seeds", "n_reached",
    "examples_to_threshold", "speedup", "speedup_low", "speedup_high", "speedup_interval_kind", "ideal_speedup",
    "efficiency", "efficiency_low", "efficiency_high", "regime", "status",
)
_NAN = float("nan")


class Interval(NamedTuple):
    """An interval and its kind: ``percentile_bootstrap`` (5 seeds and more), ``student_t`` (2-4 seeds),
    ``residual_bootstrap`` (one series, B_crit only) or ``none`` (NaN bounds)."""

    low: float
    high: float
    kind: str


def _number(value) -> float:
    return _NAN if value is None else float(value)


def _interval(quantity: dict, kind: str | None = None) -> Interval:
    return Interval(_number(quantity.get("low")), _number(quantity.get("high")),
                    str(quantity.get("interval_kind") or kind or "none"))


@dataclass(frozen=True)
class CriticalBatch:
    """The critical batch size of one k(m) curve, as the workflow reports it.

    Attributes:
      b_crit: B_crit of the fit k(m) = S_min (1 + B_crit/m) (examples per step); inf when S_min is fitted as 0
        (k still falls as 1/m), NaN when fewer than 3 batch sizes reached the target.
      interval: B_crit's interval and its kind.
      report: the text to quote: the value to 4 significant digits, or a bound ("< 8": below the smallest batch
        size measured, "> 1024": above the largest that reached the target); None when not estimable.
      bound: ``below_range``, ``above_range`` or None (inside the measured range).
      s_min: S_min, the fewest steps any batch size needs (steps); s_min_interval its interval.
      e_min: E_min = S_min B_crit, the fewest examples (examples).
      log_rmse: root mean square log residual of the fit (0.1: a typical miss of about 10%).
      accepted: whether the fit describes the data: inside the measured range and log_rmse <= max_log_rmse
        (the workflow draws only such fits).
      note: why the fit is not accepted (None when it is).
      overhead: the relative overhead o of the overhead-based critical batch (Zhang et al. 2024).
      overhead_batch: where k(m) m first exceeds (1 + o) k(m0) m0, read off the measured k(m) (NaN when not
        reached: `overhead_report` is then "> m"); overhead_interval its interval over seeds.
      overhead_report: the text to quote for it.
      overhead_batch_fit: the same from the fit, (1 + o) m0 + o B_crit; overhead_fit_interval its interval.
      largest_linear: the largest batch size in the linear regime (None when only m0 qualifies).
      first_stagnation: the smallest batch size in stagnation (None when none stagnates).
      n_points: batch sizes that reached the target; n_censored: never-reached sizes used as censored;
        n_seeds: seeds.
      entry: the critical_batch.json entry all of this was read from.
    """

    b_crit: float
    interval: Interval
    report: str | None
    bound: str | None
    s_min: float
    s_min_interval: Interval
    e_min: float
    log_rmse: float
    accepted: bool
    note: str | None
    overhead: float
    overhead_batch: float
    overhead_interval: Interval
    overhead_report: str | None
    overhead_batch_fit: float
    overhead_fit_interval: Interval
    largest_linear: int | None
    first_stagnation: int | None
    n_points: int
    n_censored: int
    n_seeds: int
    entry: dict = field(repr=False, compare=False)

    @classmethod
    def from_entry(cls, entry: dict) -> "CriticalBatch":
        """Reads a critical-batch entry (`curves.critical_entry`, or one of critical_batch.json).

        Args:
          entry: the entry.

        Returns:
          the CriticalBatch.
        """
        b, s = entry.get("B_crit") or {}, entry.get("S_min") or {}
        overhead = entry.get("overhead_critical_batch") or {}
        direct, fit = overhead.get("direct") or {}, overhead.get("from_fit") or {}
        kind = entry.get("interval_kind")
        s_min, e_min = _number(s.get("estimate")), _number((entry.get("E_min") or {}).get("estimate"))
        b_crit = _number(b.get("estimate"))
        if math.isnan(b_crit) and s_min == 0.0 and e_min > 0.0:
            b_crit = math.inf  # S_min fitted as 0, which the JSON writes as null
        return cls(
            b_crit=b_crit, interval=_interval(b, kind), report=b.get("report"),
            bound=b.get("bound"), s_min=s_min, s_min_interval=_interval(s, kind),
            e_min=e_min, log_rmse=_number(entry.get("log_rmse")),
            accepted=bool(entry.get("fit_meaningful", False)), note=entry.get("note"),
            overhead=_number(overhead.get("overhead")), overhead_batch=_number(direct.get("estimate")),
            overhead_interval=_interval(direct), overhead_report=direct.get("report"),
            overhead_batch_fit=_number(fit.get("estimate")), overhead_fit_interval=_interval(fit),
            largest_linear=entry.get("largest_linear_batch_size"),
            first_stagnation=entry.get("first_stagnation_batch_size"),
            n_points=int(entry.get("n_points") or 0), n_censored=int(entry.get("n_censored") or 0),
            n_seeds=int(entry.get("n_seeds") or 0), entry=entry)

    def __str__(self) -> str:
        if self.report is None:
            return f"B_crit not estimable ({self.note or 'no fit'})"
        text = f"B_crit {self.report}"
        if self.bound is None and math.isfinite(self.interval.low) and math.isfinite(self.interval.high):
            text += f" [{self.interval.low:.4g}, {self.interval.high:.4g}] ({self.interval.kind})"
        text += f", S_min {self.s_min:.4g} steps, log-RMSE {self.log_rmse:.3f}"
        if self.bound is not None:
            text += ", a bound: B_crit lies outside the measured batch sizes"
        elif not self.accepted:
            text += f", not accepted: {self.note}"
        if self.overhead_report is not None:
            text += f"; overhead-based critical batch ({self.overhead:.0%}) {self.overhead_report}"
        return text


def _steps_frame(df, batch_size: str, steps: str, seed: str | None) -> pd.DataFrame:
    """The user's table as `check_external_frame` reads a steps-to-target CSV (columns batch_size, steps, seed)."""
    df = df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)
    names = {"batch_size": batch_size, "steps": steps, **({"seed": seed} if seed is not None else {})}
    missing = [name for name in names.values() if name not in df.columns]
    if missing:
        raise AnalysisInputError(f"the DataFrame has no column {', '.join(map(repr, missing))} (columns: "
                                 f"{', '.join(map(str, df.columns))}); name yours with batch_size=, steps=, seed=")
    frame = pd.DataFrame({canonical: df[name].to_numpy() for canonical, name in names.items()})
    if seed is None and frame["batch_size"].duplicated().any():
        size = frame.loc[frame["batch_size"].duplicated(), "batch_size"].iloc[0]
        raise AnalysisInputError(f"batch size {size} has more than one row: name the column that tells the seeds "
                                 "apart (seed='seed')")
    return frame


def _tables(df, batch_size, steps, seed, base_batch, settings: dict) -> tuple[pd.DataFrame, dict, int]:
    """(speedup rows, critical-batch entry, m0) of one curve, by `external.steps_tables`."""
    source = f"DataFrame (batch_size={batch_size!r}, steps={steps!r}, seed={seed!r})"
    kind, checked = check_external_frame(_steps_frame(df, batch_size, steps, seed), source)
    base = check_base_batch(checked, kind, base_batch, source)
    study = external_study(base, regimes={k: settings[k] for k in ("linear_efficiency", "stagnation_gain")},
                           bootstrap={k: settings[k] for k in ("samples", "confidence")},
                           critical_batch={k: settings[k] for k in ("overhead", "max_log_rmse")})
    rows, summary = steps_tables(checked, study)
    (entry,) = (per_metric["steps"] for per_metric in summary.values())
    return rows, entry, base


def fit_critical_batch(df, batch_size: str = "batch_size", steps: str = "steps", seed: str | None = None, *,
                       base_batch: int | None = None, overhead: float = 0.2, max_log_rmse: float = 0.15,
                       samples: int = 1000, confidence: float = 0.9, linear_efficiency: float = 0.8,
                       stagnation_gain: float = 0.1) -> CriticalBatch:
    """The critical batch size of steps to a target per batch size, as the workflow measures it.

    Fits k(m) = S_min (1 + B_crit/m) (McCandlish et al. 2018) to the seed means of k in log space, with an
    interval whose kind follows the seeds (percentile bootstrap from 5 seeds, Student-t of per-seed fits
    from 2, a residual bootstrap of one series), B_crit as a bound when it falls outside the measured batch
    sizes, and the overhead-based critical batch (Zhang et al. 2024). Bootstraps use seed 0: the same table
    gives the same numbers.

    Args:
      df: a DataFrame (or anything `pd.DataFrame` takes, such as a dict of lists) with one row per batch size
        (and seed); ``inf`` steps mean the target was never reached (such sizes are left out of the fit and
        end the linear regime).
      batch_size: the column of batch sizes m (positive integers).
      steps: the column of steps to the target k(m) (positive; inf: never reached).
      seed: the column telling seeds apart; None when there is one row per batch size.
      base_batch: m0 of the regimes and the overhead-based critical batch (default: the smallest batch size).
      overhead: the relative overhead over linear scaling of the overhead-based critical batch.
      max_log_rmse: the largest log-RMSE at which the fit is accepted.
      samples: bootstrap resamples.
      confidence: the coverage of the intervals.
      linear_efficiency: the efficiency cut-off of the linear regime.
      stagnation_gain: the per-doubling cut of k below which the curve stagnates.

    Returns:
      a `CriticalBatch`.

    Raises:
      AnalysisInputError: a missing column, a non-positive or non-integer batch size, a non-positive step
        count, a duplicated row, fewer than 2 batch sizes, or a base batch size that is absent or never
        reached the target; the message says which.

    Example:
      >>> import batchscale
      >>> m = [8, 16, 32, 64, 128, 256, 512, 1024]
      >>> fit = batchscale.fit_critical_batch({"batch_size": m, "steps": [100 * (1 + 64 / b) for b in m]})
      >>> round(fit.b_crit, 6), round(fit.s_min, 6), fit.report, fit.accepted
      (64.0, 100.0, '64', True)
      >>> round(fit.overhead_batch_fit, 6)  # (1 + 0.2) 8 + 0.2 64
      22.4
    """
    settings = {"overhead": overhead, "max_log_rmse": max_log_rmse, "samples": samples, "confidence": confidence,
                "linear_efficiency": linear_efficiency, "stagnation_gain": stagnation_gain}
    _, entry, _ = _tables(df, batch_size, steps, seed, base_batch, settings)
    return CriticalBatch.from_entry(entry)


def speedup_table(df, batch_size: str = "batch_size", steps: str = "steps", seed: str | None = None, *,
                  base_batch: int | None = None, samples: int = 1000, confidence: float = 0.9,
                  linear_efficiency: float = 0.8, stagnation_gain: float = 0.1) -> pd.DataFrame:
    """Speedup, efficiency and regime per batch size, from steps to a target per batch size (and seed).

    The rows of the workflow's speedup.csv (`curves.speedup_rows`): k_mean is the mean over seeds (inf as soon
    as one seed never reached the target), speedup k(m0)/k(m), ideal speedup m/m0, efficiency k(m0) m0/(k(m) m),
    and the regime: ``base``, ``linear`` (efficiency >= linear_efficiency), ``diminishing``, ``stagnation``
    (from where doubling m never again cuts k by stagnation_gain), ``not_reached``, ``below_base``.

    Args:
      df: as in `fit_critical_batch`.
      batch_size: the column of batch sizes.
      steps: the column of steps to the target (inf: never reached).
      seed: the column telling seeds apart (None: one row per batch size).
      base_batch: m0 (default: the smallest batch size).
      samples: bootstrap resamples.
      confidence: the coverage of the intervals.
      linear_efficiency: the efficiency cut-off of the linear regime.
      stagnation_gain: the per-doubling cut of k below which the curve stagnates.

    Returns:
      a DataFrame, one row per batch size in increasing order, with the columns SPEEDUP_TABLE_COLUMNS (those
      of speedup.csv documented in `batchscale.analysis.study`, and efficiency_low/high = the speedup's
      interval over m/m0). Intervals: percentile bootstrap from 5 seeds, Student-t from 2, none (NaN) for one.

    Raises:
      AnalysisInputError: as `fit_critical_batch`.

    Example:
      >>> import batchscale
      >>> table = batchscale.speedup_table({"batch_size": [8, 16, 32, 64], "steps": [900, 500, 300, 200]})
      >>> table["speedup"].tolist(), table["efficiency"].tolist()
      ([1.0, 1.8, 3.0, 4.5], [1.0, 0.9, 0.75, 0.5625])
      >>> table["regime"].tolist()
      ['base', 'linear', 'diminishing', 'diminishing']
    """
    settings = {"overhead": 0.2, "max_log_rmse": 0.15, "samples": samples, "confidence": confidence,
                "linear_efficiency": linear_efficiency, "stagnation_gain": stagnation_gain}
    rows, _, _ = _tables(df, batch_size, steps, seed, base_batch, settings)
    rows = rows.sort_values("batch_size", kind="stable").reset_index(drop=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows["efficiency_low"] = rows["speedup_low"] / rows["ideal_speedup"]
        rows["efficiency_high"] = rows["speedup_high"] / rows["ideal_speedup"]
    return rows[list(SPEEDUP_TABLE_COLUMNS)]
