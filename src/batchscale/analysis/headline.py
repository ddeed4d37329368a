"""The headline numbers of a run (results/summary.json), read from the analysis files of its studies and
comparisons: per study and strategy the own and common eps, B_crit and the overhead-based critical batch,
the regimes at the common eps, the fastest strategy per batch size, the tuned search's rates against the
fixed rules' eta0, B_simple beside B_crit, the local critical batch per checkpoint where the study branches,
and for least squares the predicted against the measured lsr breakdown; per comparison each study's B_crit at the common eps.

Headlines use the training loss (the paper's main metric) at the common eps, where the strategies of a
study are compared on one threshold. `batchscale.report.summary` writes them in words (results/summary.md).

summary.json: {"studies": [study headline], "comparisons": [comparison headline]}, NaN and inf as null;
the keys are those of `study_headline` and `comparison_headline`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from batchscale.store.records import read_csv, read_json
from batchscale.analysis.branching import branching_headline
from batchscale.analysis.documents import json_safe
from batchscale.analysis.least_squares import breakdown_agrees, measured_breakdown, theory_figure_numbers
from batchscale.analysis.noise_tuned import noise_tuned_headlines
from batchscale.analysis.robustness import comparison_conclusions, eta_edge_status, warmup_headline
from batchscale.analysis.thresholds import LOWER_QUARTILE, describe_threshold_rule
from batchscale.spec.manifest import BRANCHING_TABLE
from batchscale.spec.studies import has_theory

HEADLINE_METRIC = "train_loss"
THEORY_KEYS = ("lambda_max", "beta", "stability_limit", "mbb_critical_batch", "predicted_lsr_breakdown")


def critical_numbers(entry: dict) -> dict:
    """B_crit of a critical_batch.json entry as the headline quotes it.

    Args:
      entry: a critical-batch entry.

    Returns:
      {estimate, report (the analysis' text: "< 4", "> 128" or the value), bound, low, high, interval_kind,
      fit_meaningful, rejected (the fit's log-RMSE is above the study's cut-off), log_rmse}.
    """
    b = entry.get("B_crit") or {}
    return {"estimate": b.get("estimate"), "report": b.get("report"), "bound": b.get("bound"),
            "low": b.get("low"), "high": b.get("high"),
            "interval_kind": b.get("interval_kind") or entry.get("interval_kind") or "none",
            "fit_meaningful": bool(entry.get("fit_meaningful", False)),
            "rejected": bool(b.get("rejected", False)), "log_rmse": entry.get("log_rmse")}


def overhead_numbers(entry: dict) -> dict:
    """The overhead-based critical batch (read directly off k(m)) of a critical_batch.json entry.

    Args:
      entry: a critical-batch entry.

    Returns:
      {report (the analysis' text, else its estimate), bound, low, high, interval_kind}.
    """
    direct = (entry.get("overhead_critical_batch") or {}).get("direct") or {}
    return {"report": direct.get("report", direct.get("estimate")), "bound": direct.get("bound"),
            "low": direct.get("low"), "high": direct.get("high"),
            "interval_kind": direct.get("interval_kind", "none")}


def regime_steps(rows: pd.DataFrame) -> list[dict]:
    """A strategy's regimes with the speedup at each batch size.

    Args:
      rows: one strategy's rows of a speedup table.

    Returns:
      [{batch_size, regime, speedup}] in increasing batch size (speedup NaN where not measured).
    """
    return [{"batch_size": int(row["batch_size"]), "regime": str(row["regime"]), "speedup": float(row["speedup"])}
            for _, row in rows.sort_values("batch_size").iterrows()]


def fastest_per_batch(common: pd.DataFrame) -> dict:
    """The strategy with the smallest k at the common eps, per batch size.

    Args:
      common: the rows of a speedup table at the common eps (one metric).

    Returns:
      {m: strategy} (ties: the first in table order; None when none reached eps); with the tuned strategy
      present, this compares it against the fixed rules.
    """
    out = {}
    for m, rows in common.groupby("batch_size", sort=True):
        finite = rows[np.isfinite(rows["k_mean"].astype(float))]
        out[int(m)] = None if finite.empty else str(finite.loc[finite["k_mean"].astype(float).idxmin(), "strategy"])
    return out


def tuned_numbers(entry: dict, searched: dict | None = None) -> dict | None:
    """The tuned search's best learning rates of a critical_batch.json entry.

    Args:
      entry: tuned's entry at its own eps.
      searched: the study's first-round learning-rate range {min, max} (tuning.lr), to tell an extended edge.

    Returns:
      {threshold, eta_star {m: rate}, lr_edge {m: "low"|"high"} (rates at the edge of the searched range),
      edge_status {m: interior / low or high edge [, extended to its cap]} (`robustness.eta_edge_status`),
      B_noise {estimate, low, high, interval_kind}, eta_fit_max_abs_log_residual}; None without rates.
    """
    if not entry.get("eta_star"):
        return None
    return {"threshold": entry.get("threshold"), "eta_star": entry["eta_star"], "lr_edge": entry.get("lr_edge") or {},
            "edge_status": eta_edge_status(entry["eta_star"], entry.get("lr_edge") or {}, entry.get("lr_range") or {},
                                           searched),
            "B_noise": entry.get("B_noise") or {},
            "eta_fit_max_abs_log_residual": entry.get("eta_fit_max_abs_log_residual")}


def eta0_against_tuned(eta0: float, base_batch: int, eta_star: dict, tolerance: float = 1.5) -> dict | None:
    """The fixed rules' eta0 beside the tuned search's best rate at the base batch.

    The fixed rules are a fair baseline only when eta0 is (close to) the best rate at m0.

    Args:
      eta0: the fixed rules' base learning rate.
      base_batch: m0.
      eta_star: tuned's best rate per batch size ({str(m): rate}).
      tolerance: the factor within which eta0 counts as the best rate.

    Returns:
      {eta0, base_batch, eta_star_base, ratio (eta0 / eta*(m0)), tolerance, within}; None when tuned has no
      rate at m0.
    """
    rate = (eta_star or {}).get(str(base_batch), (eta_star or {}).get(base_batch))
    if rate is None:
        return None
    ratio = float(eta0) / float(rate)
    return {"eta0": eta0, "base_batch": base_batch, "eta_star_base": rate, "ratio": ratio, "tolerance": tolerance,
            "within": bool(1 / tolerance <= ratio <= tolerance)}


def noise_traced(study: dict) -> bool:
    """Whether the study traces the gradient noise scale (its noise_scale.csv then has rows)."""
    return bool((study.get("noise_scale") or {}).get("enabled", False))


def parse_bound(report) -> tuple[str, float] | None:
    """("<" or ">", value) from a bound report such as "< 4" or "> 64"; None for an estimate or nothing."""
    text = str(report).strip() if report is not None and not (isinstance(report, float) and math.isnan(report)) else ""
    if text and text[0] in "<>":
        return text[0], float(text[1:])
    return None


def noise_ratio(rows: pd.DataFrame) -> dict | None:
    """B_simple at eps beside the measured B_crit, for one strategy's rows of noise_scale.csv.

    Each row's b_simple_at_eps is already a window ratio (mean tr Σ / mean |G|² over the trailing window, at
    the step where each seed reaches eps; `batchscale.analysis.noise`) averaged over seeds. Across batch
    sizes the headline is their median, with the per-seed extremes (b_simple_at_eps_min/max) as its spread.

    Args:
      rows: one strategy's rows (one per batch size).

    Returns:
      {b_simple_median, b_simple_low, b_simple_high, n_batch_sizes, n_runs, B_crit, B_crit_low, B_crit_high,
      interval_kind, bound, ratio, ratio_low, ratio_high}: the ratio is B_crit / the median, its range
      B_crit's interval over the same median; where B_crit is a bound ("< 4", "> 64") the ratio is the same
      bound (bound, bound_value, ratio_bound); where B_crit is not estimable, so is the ratio. None when no
      run reached eps with a valid B_simple.
    """
    ok = rows[np.isfinite(rows["b_simple_at_eps"].astype(float))]
    if ok.empty:
        return None
    median = float(ok["b_simple_at_eps"].astype(float).median())
    first = ok.iloc[0]
    b_crit, low, high = (float(first[c]) for c in ("B_crit", "B_crit_low", "B_crit_high"))
    bound = parse_bound(first.get("B_crit_report"))
    out = {"b_simple_median": median, "b_simple_low": float(ok["b_simple_at_eps_min"].astype(float).min()),
           "b_simple_high": float(ok["b_simple_at_eps_max"].astype(float).max()), "n_batch_sizes": int(len(ok)),
           "n_runs": int(ok["n_at_eps"].sum()), "B_crit": b_crit, "B_crit_low": low, "B_crit_high": high,
           "interval_kind": str(first.get("B_crit_interval_kind", "none")), "bound": None,
           "ratio": float("nan"), "ratio_low": float("nan"), "ratio_high": float("nan")}
    if bound is not None:
        out["bound"] = bound[0]
        out["B_crit"] = out["ratio"] = float("nan")
        out["bound_value"], out["ratio_bound"] = bound[1], bound[1] / median if median > 0 else float("nan")
    elif math.isfinite(b_crit) and median > 0:
        out["ratio"] = b_crit / median
        out["ratio_low"], out["ratio_high"] = low / median, high / median
    return out


def noise_headlines(table: pd.DataFrame, critical: dict, metric: str = HEADLINE_METRIC) -> list[dict]:
    """The noise-scale headline of each strategy of a study's noise_scale.csv at `metric`.

    Args:
      table: noise_scale.csv.
      critical: the study's critical_batch.json.
      metric: the metric.

    Returns:
      [{strategy, threshold (its own eps), ratio (`noise_ratio`, None when not estimable)}].
    """
    out = []
    rows = table[table["metric"] == metric] if "metric" in table else table
    for strategy, group in rows.groupby("strategy", sort=False):
        eps = (((critical.get("strategies") or {}).get(strategy) or {}).get(metric) or {}).get("threshold")
        out.append({"strategy": str(strategy), "threshold": eps, "ratio": noise_ratio(group)})
    return out


def common_rule(study: dict) -> str:
    """How the study's common eps was chosen: ``fixed`` (a fixed threshold makes every eps the same),
    ``smallest`` or ``largest`` (its common_threshold)."""
    threshold = study.get("threshold")
    if isinstance(threshold, dict) and "fixed" in threshold:
        return "fixed"
    return study.get("common_threshold", "smallest")


def threshold_rule_text(study: dict) -> str:
    """The study's own-eps rule as the tables write it (``lower_quartile_of_largest``, ...); the summary names
    it, since tuned and the fixed strategies share it."""
    try:
        return describe_threshold_rule(study.get("threshold", LOWER_QUARTILE))
    except ValueError:
        return str(study.get("threshold"))


def strategy_headline(entry: dict, own: dict, rows: pd.DataFrame, own_rows: pd.DataFrame) -> dict:
    """One strategy's headline numbers.

    Args:
      entry: its critical-batch entry at the common eps.
      own: its entry at its own eps ({} when none).
      rows: its rows of speedup_common.csv (empty for tuned, whose steps to result are in tuned.csv).
      own_rows: its rows of speedup.csv.

    Returns:
      {own_threshold, own_source_batch, critical, overhead_critical, largest_linear, first_stagnation,
      regimes (None for tuned), own_critical, own_regimes}.
    """
    return {
        "own_threshold": own.get("threshold"),
        "own_source_batch": own.get("threshold_batch_size"),
        "critical": critical_numbers(entry),
        "overhead_critical": overhead_numbers(entry),
        "largest_linear": entry.get("largest_linear_batch_size"),
        "first_stagnation": entry.get("first_stagnation_batch_size"),
        "regimes": regime_steps(rows) if not rows.empty else None,
        "own_critical": critical_numbers(own) if own else None,
        "own_regimes": regime_steps(own_rows),
    }


def study_headline(name: str, study: dict, critical: dict, speedup: pd.DataFrame, common: pd.DataFrame,
                   theory_doc: dict | None = None, metric: str = HEADLINE_METRIC) -> dict:
    """One study's headline numbers at `metric`.

    Args:
      name: the study.
      study: its resolved config.
      critical: its critical_batch.json.
      speedup: its speedup.csv.
      common: its speedup_common.csv.
      theory_doc: its theory.json (least squares only).
      metric: the metric.

    Returns:
      {study, description, metric, common_threshold, strategies {strategy: `strategy_headline`},
      common_rule, fastest, tuned_present, tuned (`tuned_numbers`), eta0_check (`eta0_against_tuned`)} and,
      with a theory.json and lsr, theory {the predictions, measured_lsr_breakdown, agrees}.
    """
    common_doc = (critical.get("common") or {}).get(metric) or {}
    common_rows = common[common["metric"] == metric]
    own_rows = speedup[speedup["metric"] == metric]
    strategies = {}
    for strategy in study["strategies"]:
        entry = (common_doc.get("strategies") or {}).get(strategy)
        own = ((critical.get("strategies") or {}).get(strategy) or {}).get(metric) or {}
        rows = common_rows[common_rows["strategy"] == strategy]
        # tuned's steps to result are in tuned.csv, not speedup_common.csv: its row here comes from the JSON
        if entry is None or (rows.empty and strategy != "tuned"):
            continue
        strategies[strategy] = strategy_headline(entry, own, rows, own_rows[own_rows["strategy"] == strategy])
    tuned_entry = ((critical.get("strategies") or {}).get("tuned") or {}).get(metric) or {}
    headline = {
        "study": name, "description": study.get("description", ""), "metric": metric,
        "common_threshold": common_doc.get("threshold"), "strategies": strategies,
        "common_rule": common_rule(study),
        "threshold_rule": threshold_rule_text(study),
        "fastest": fastest_per_batch(common_rows),
        "tuned_present": "tuned" in study["strategies"],
        "tuned": tuned_numbers(tuned_entry, (study.get("tuning") or {}).get("lr")),
        "eta0_check": (eta0_against_tuned(study["eta0"], study["base_batch"], tuned_entry.get("eta_star") or {})
                       if "eta0" in study and any(s != "tuned" for s in study["strategies"]) else None),
    }
    if theory_doc is not None and "lsr" in study["strategies"]:
        measured = measured_breakdown(common_rows[common_rows["strategy"] == "lsr"], study["base_batch"])
        predicted = theory_doc.get("predicted_lsr_breakdown")
        headline["theory"] = {**{k: theory_doc[k] for k in THEORY_KEYS}, "measured_lsr_breakdown": measured,
                              "agrees": breakdown_agrees(predicted, measured),
                              "recursion_agreement": (theory_figure_numbers(theory_doc, common)["agreement"]
                                                      if theory_doc.get("predicted_k") else {})}
    return headline


def comparison_headline(name: str, spec: dict, table: pd.DataFrame) -> dict:
    """A comparison's headline numbers, from its speedup.csv (`batchscale.analysis.comparison`).

    Args:
      name: the comparison.
      spec: its config (title, common_threshold).
      table: its speedup.csv, whose ``common`` rows carry the critical-batch columns.

    Returns:
      {comparison, title, strategy, metric, common_threshold, common_rule, curves [{label, study,
      b_crit_report, b_crit, b_crit_low, b_crit_high, interval_kind, largest_batch, speedup_at_largest,
      speedup_low_at_largest, speedup_high_at_largest, ideal_at_largest}], conclusions (each pair told apart
      only where the intervals are disjoint: `robustness.comparison_conclusions`)}.
    """
    common = table[table["threshold_scope"].astype(str) == "common"]
    curves = []
    for label, rows in common.groupby("label", sort=False):
        row = rows.iloc[0]
        largest = rows.loc[rows["batch_size"].idxmax()]
        curves.append({"label": str(label), "study": str(row["study"]),
                       "b_crit_report": "" if pd.isna(row["b_crit_report"]) else str(row["b_crit_report"]),
                       "b_crit": float(row["b_crit"]), "b_crit_low": float(row["b_crit_low"]),
                       "b_crit_high": float(row["b_crit_high"]), "interval_kind": str(row["b_crit_interval_kind"]),
                       "largest_batch": int(largest["batch_size"]), "speedup_at_largest": float(largest["speedup"]),
                       "speedup_low_at_largest": float(largest.get("speedup_low", math.nan)),
                       "speedup_high_at_largest": float(largest.get("speedup_high", math.nan)),
                       "ideal_at_largest": float(largest["ideal_speedup"])})
    first = common.iloc[0] if len(common) else {}
    return {"comparison": name, "title": spec.get("title") or name, "strategy": str(first.get("strategy", "")),
            "metric": str(first.get("metric", "")), "common_threshold": float(first.get("threshold", math.nan)),
            "common_rule": spec.get("common_threshold", "smallest"), "curves": curves,
            "conclusions": comparison_conclusions(curves)}


def read_study(results: Path, name: str, study: dict) -> dict:
    """`study_headline` of a study from its files in `results`, with its noise headlines where traced."""
    folder = Path(results) / name
    critical = read_json(folder / "critical_batch.json")
    theory_doc = read_json(folder / "theory.json") if has_theory(study) else None
    headline = study_headline(name, study, critical, read_csv(folder / "speedup.csv"),
                              read_csv(folder / "speedup_common.csv"), theory_doc)
    if noise_traced(study):
        headline["noise"] = noise_headlines(read_csv(folder / "noise_scale.csv"), critical)
        if (folder / "noise_vs_tuned.csv").exists():  # the summary's lines; results from before it: the old line
            headline["noise_tuned"] = noise_tuned_headlines(read_csv(folder / "noise_vs_tuned.csv"))
    if (folder / "warmup_check.csv").exists():  # k(m) against the warm-up (analysis.robustness)
        headline["warmup"] = warmup_headline(read_csv(folder / "warmup_check.csv"))
    if (study.get("branching") or {}).get("enabled"):  # the local critical batch per checkpoint
        headline["branching"] = branching_headline(read_csv(folder / BRANCHING_TABLE.name), study["branching"])
    return headline


def read_comparison(results: Path, name: str, spec: dict) -> dict:
    """`comparison_headline` of a comparison from its speedup.csv in `results`."""
    return comparison_headline(name, spec, read_csv(Path(results) / "comparisons" / name / "speedup.csv"))


def run_headlines(results, studies: dict, comparisons: dict) -> dict:
    """The headline numbers of a run.

    Args:
      results: the results folder.
      studies: {name: resolved study config}.
      comparisons: {name: comparison config}.

    Returns:
      {"studies": [study headline], "comparisons": [comparison headline]}, JSON-safe (NaN and inf as None).
    """
    return json_safe({"studies": [read_study(Path(results), name, study) for name, study in studies.items()],
                      "comparisons": [read_comparison(Path(results), name, spec) for name, spec in comparisons.items()]})


def headlines_json(doc: dict) -> str:
    """summary.json's text: `run_headlines`' document, indented, strict JSON."""
    return json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n"
