"""The one-page answer: each study's headline numbers, read from its analysis files, and the least-squares
theory check (λ₁, β, the predicted and the measured batch at which linear LR scaling breaks down), and each
comparison's critical batch sizes at its common ε.

Pure functions over the analysis outputs (critical_batch.json, speedup.csv, speedup_common.csv, theory.json,
and noise_scale.csv where a study traces the noise scale);
`main` is the thin command the summary rules call:

    python -m batchscale.summary theory --study-json JSON --out results/<study>/theory.json
    python -m batchscale.summary write --studies-json JSON --results results --out results/summary.md

Headlines use the training loss (the paper's main metric) at the common ε, where the strategies of a study are
compared on one threshold.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from batchscale.analysis import theory

HEADLINE_METRIC = "train_loss"
# Strategies whose learning rate is a fixed rule of m (the `tuned` strategy searches it instead).
FIXED_RULES = ("blr", "lsr", "srsr", "longer")
REGIME_SHORT = {"base": "base", "linear": "linear", "diminishing": "diminishing", "stagnation": "stagnation",
                "not_reached": "not reached", "trivial": "trivial", "missing": "missing",
                "below_base": "below m0"}


# --------------------------------------------------------------------------------------------
# Least-squares theory


def has_theory(study: dict) -> bool:
    """Whether the study is one the least-squares theory describes: a linear model on `least_squares` data.

    (The theory is exact for noise-free targets; with noise it still gives λ₁, β and the stability limit.)
    """
    return study["dataset"]["name"] == "least_squares" and study["model"]["name"] == "linear"


def design_matrix(x, bias: bool = True) -> np.ndarray:
    """The rows the loss is quadratic in: x flattened, with a column of ones for the linear model's bias."""
    X = np.asarray(x, dtype=float).reshape(len(x), -1)
    return np.hstack([X, np.ones((X.shape[0], 1))]) if bias else X


def least_squares_theory(X, eta0: float, base_batch: int, batch_sizes, momentum: float = 0.0) -> dict:
    """λ₁ and β of the loss (1/2n) Σ (x_iᵀw − y_i)² over the rows X (Hessian H = XᵀX/n), and the predictions.

    The engine's regression loss is half the squared error, so its Hessian is XᵀX/n (not 2XᵀX/n) and the
    stability limit of gradient descent is 2/λ₁ of that matrix. `predicted_lsr_breakdown` is the first batch
    size at which lsr's step η0·m/m0 exceeds 2/λ₁ (None when none does). With heavy-ball momentum μ the limit
    is 2(1 + μ)/λ₁; the prediction uses that limit (μ = 0 gives 2/λ₁).
    """
    X = np.asarray(X, dtype=float)
    lam = theory.top_eigenvalue(X)
    beta = theory.max_row_norm_sq(X)
    sizes = sorted(int(b) for b in batch_sizes)
    # lsr_breakdown_batch compares with 2/λ; an effective λ/(1+μ) turns that into 2(1+μ)/λ.
    breakdown = theory.lsr_breakdown_batch(eta0, base_batch, lam / (1.0 + momentum), sizes)
    return {
        "loss": "(1/2n) sum_i (x_i^T w + b - y_i)^2; Hessian H = [X 1]^T [X 1] / n",
        "n": int(X.shape[0]), "d": int(X.shape[1]),
        "lambda_max": lam, "beta": beta, "momentum": float(momentum),
        "stability_limit": 2.0 * (1.0 + momentum) / lam,
        "mbb_critical_batch": theory.mbb_critical_batch(beta, lam),
        "eta0": float(eta0), "base_batch": int(base_batch), "batch_sizes": sizes,
        "lsr_step": {str(m): eta0 * m / base_batch for m in sizes},
        "mbb_step": {str(m): theory.mbb_step(m, beta, lam) for m in sizes},
        "predicted_lsr_breakdown": breakdown,
    }


def measured_breakdown(rows: pd.DataFrame, base_batch: int) -> int | None:
    """The first batch size above m0 at which a strategy's k (one strategy's rows of a speedup table) stops
    falling: its seeds did not all reach ε (diverged or not reached), or k(m) ≥ k at the previous batch size.
    None when k falls at every measured size, or when m0 itself never reached ε."""
    rows = rows.sort_values("batch_size")
    base = rows[rows["batch_size"].astype(int) == int(base_batch)]["k_mean"].astype(float)
    if base.empty or not np.isfinite(base.iloc[0]):
        return None  # m0 itself never reached eps: nothing to break down from
    previous = None
    for m, k in zip(rows["batch_size"].astype(int), rows["k_mean"].astype(float)):
        if m > base_batch and (not np.isfinite(k) or (previous is not None and k >= previous)):
            return int(m)
        previous = k
    return None


def breakdown_agrees(predicted: int | None, measured: int | None) -> bool | None:
    """The check of issue 12: the measured breakdown at the predicted batch size or one doubling earlier."""
    if predicted is None or measured is None:
        return None if predicted is None and measured is None else False
    return measured in (predicted, predicted // 2)


# --------------------------------------------------------------------------------------------
# Headlines


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def critical_text(entry: dict) -> str:
    """B_crit as written by the analysis ("< 4", "> 128" or a value), with its interval and interval kind."""
    b = entry.get("B_crit") or {}
    report = b.get("report")
    kind = b.get("interval_kind") or entry.get("interval_kind") or "none"
    if report is None:
        return "not estimable"
    text = str(report) if isinstance(report, str) else _fmt(report)
    if b.get("bound") is None and b.get("low") is not None and b.get("high") is not None:
        text += f" [{_fmt(b['low'])}, {_fmt(b['high'])}]"
    text += f" ({kind})"
    if b.get("bound") is None and not entry.get("fit_meaningful", False):
        text += ", fit not meaningful"
    return text


def overhead_text(entry: dict) -> str:
    direct = (entry.get("overhead_critical_batch") or {}).get("direct") or {}
    report = direct.get("report", direct.get("estimate"))
    if report is None:
        return "n/a"
    text = str(report) if isinstance(report, str) else _fmt(report)
    if direct.get("low") is not None and direct.get("high") is not None and direct.get("bound") is None:
        text += f" [{_fmt(direct['low'])}, {_fmt(direct['high'])}] ({direct.get('interval_kind', 'none')})"
    return text


def regimes_text(rows: pd.DataFrame) -> str:
    """"4 base, 8 linear, 16 diminishing, ..." over one strategy's rows, with the speedup at each size."""
    parts = []
    for _, row in rows.sort_values("batch_size").iterrows():
        speed = row["speedup"]
        speed_text = f" ×{speed:.2g}" if pd.notna(speed) and np.isfinite(speed) and row["regime"] != "base" else ""
        parts.append(f"{int(row['batch_size'])} {REGIME_SHORT.get(row['regime'], row['regime'])}{speed_text}")
    return ", ".join(parts)


def fastest_per_batch(common: pd.DataFrame) -> dict:
    """{m: strategy with the smallest k at the common ε} (ties: the first in table order; None when none
    reached ε) -- the comparison of the tuned strategy against the fixed rules when it is present."""
    out = {}
    for m, rows in common.groupby("batch_size", sort=True):
        finite = rows[np.isfinite(rows["k_mean"].astype(float))]
        out[int(m)] = None if finite.empty else str(finite.loc[finite["k_mean"].astype(float).idxmin(), "strategy"])
    return out


def tuned_text(entry: dict) -> str | None:
    """The tuned search's best learning rate per batch size, where it hit the edge of the searched range, and
    B_noise of the fitted optimal-step law, from a study's critical_batch.json (None without tuned)."""
    if not entry.get("eta_star"):
        return None
    rates = ", ".join(f"{m}: {_fmt(rate, 3)}" for m, rate in entry["eta_star"].items())
    text = f"tuned η*(m) at its own ε = {_fmt(entry.get('threshold'), 4)}: {rates}"
    if entry.get("lr_edge"):
        edges = ", ".join(f"{m} ({side})" for m, side in entry["lr_edge"].items())
        text += f"; η* at the edge of the searched range at m = {edges}, so those rates are bounds"
    noise = entry.get("B_noise") or {}
    if noise.get("estimate") is not None:
        text += (f"; B_noise = {_fmt(noise['estimate'])} [{_fmt(noise.get('low'))}, {_fmt(noise.get('high'))}] "
                 f"({noise.get('interval_kind')}, fit max |log residual| "
                 f"{_fmt(entry.get('eta_fit_max_abs_log_residual'), 2)})")
    return text


def eta0_against_tuned(eta0: float, base_batch: int, eta_star: dict, tolerance: float = 1.5) -> str | None:
    """The fixed rules' eta0 set beside the tuned search's best rate at the base batch: the fixed rules are a fair
    baseline only when eta0 is (close to) the best rate at m0. None when tuned has no rate at m0."""
    rate = (eta_star or {}).get(str(base_batch), (eta_star or {}).get(base_batch))
    if rate is None:
        return None
    ratio = float(eta0) / float(rate)
    verdict = (f"within ×{tolerance} of it" if 1 / tolerance <= ratio <= tolerance else
               f"NOT within ×{tolerance} of it: the fixed rules start from a rate the search did not pick")
    return f"fixed rules' η0 = {_fmt(eta0, 3)} against tuned η*(m0 = {base_batch}) = {_fmt(rate, 3)} (ratio {ratio:.2f}): {verdict}"


def noise_traced(study: dict) -> bool:
    """Whether the study traces the gradient noise scale (its noise_scale.csv then has rows)."""
    return bool((study.get("noise_scale") or {}).get("enabled", False))


def _bound(report) -> tuple[str, float] | None:
    """("<" or ">", value) from a bound report such as "< 4" or "> 64"; None for an estimate or nothing."""
    text = str(report).strip() if report is not None and not (isinstance(report, float) and math.isnan(report)) else ""
    if text and text[0] in "<>":
        return text[0], float(text[1:])
    return None


def noise_ratio(rows: pd.DataFrame) -> dict | None:
    """B_simple at ε beside the measured B_crit, for one strategy's rows of noise_scale.csv (one per batch size).

    Each row's b_simple_at_eps is already a window ratio (mean tr Σ / mean |G|² over the trailing window, at
    the step where each seed reaches ε; analysis.noise) averaged over seeds. Across batch sizes the headline
    is their median, with the per-seed extremes (b_simple_at_eps_min/max) as its spread. The ratio is
    B_crit / that median, its range B_crit's interval over the same median; where B_crit is a bound
    ("< 4", "> 64") the ratio is the same bound; where B_crit is not estimable, so is the ratio.
    None when no run reached ε with a valid B_simple.
    """
    ok = rows[np.isfinite(rows["b_simple_at_eps"].astype(float))]
    if ok.empty:
        return None
    median = float(ok["b_simple_at_eps"].astype(float).median())
    first = ok.iloc[0]
    b_crit, low, high = (float(first[c]) for c in ("B_crit", "B_crit_low", "B_crit_high"))
    bound = _bound(first.get("B_crit_report"))
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


def noise_text(strategy: str, eps, n: dict) -> str:
    """One summary line: B_simple at ε (median over batch sizes, per-seed range), B_crit and their ratio."""
    text = (f"noise scale ({strategy}, two-batch, at its own ε = {_fmt(eps, 4)}): B_simple at ε = "
            f"{_fmt(n['b_simple_median'])} (median over {n['n_batch_sizes']} batch sizes, {n['n_runs']} runs; "
            f"per-seed range {_fmt(n['b_simple_low'])}–{_fmt(n['b_simple_high'])}); measured B_crit")
    if n["bound"] is not None:
        return text + (f" {n['bound']} {_fmt(n['bound_value'])}; B_crit/B_simple {n['bound']} "
                       f"{_fmt(n['ratio_bound'])} (B_crit is a bound)")
    if not math.isfinite(n["B_crit"]):
        return text + " not estimable; B_crit/B_simple not estimable"
    interval = (f" [{_fmt(n['B_crit_low'])}, {_fmt(n['B_crit_high'])}]"
                if math.isfinite(n["B_crit_low"]) and math.isfinite(n["B_crit_high"]) else "")
    ratio_range = (f" [{_fmt(n['ratio_low'])}, {_fmt(n['ratio_high'])}] (from B_crit's interval)"
                   if interval else "")
    return text + (f" = {_fmt(n['B_crit'])}{interval} ({n['interval_kind']}); B_crit/B_simple = "
                   f"{_fmt(n['ratio'])}{ratio_range}")


def noise_lines(table: pd.DataFrame, critical: dict, metric: str = HEADLINE_METRIC) -> list[str]:
    """The noise-scale lines of a study (one per strategy of its noise_scale.csv at `metric`)."""
    lines = []
    rows = table[table["metric"] == metric] if "metric" in table else table
    for strategy, group in rows.groupby("strategy", sort=False):
        n = noise_ratio(group)
        eps = (((critical.get("strategies") or {}).get(strategy) or {}).get(metric) or {}).get("threshold")
        lines.append(noise_text(str(strategy), eps, n) if n is not None else
                     f"noise scale ({strategy}): no run reached ε with a valid B_simple; ratio not estimable")
    return lines


def common_rule_text(study: dict) -> str:
    """How the study's common ε was chosen, in words (fixed thresholds make every ε the same)."""
    threshold = study.get("threshold")
    if isinstance(threshold, dict) and "fixed" in threshold:
        return "a fixed ε, the same for every strategy"
    return {"smallest": "the strictest of the strategies' own ε",
            "largest": "the loosest of the strategies' own ε"}[study.get("common_threshold", "smallest")]


def study_headline(name: str, study: dict, critical: dict, speedup: pd.DataFrame, common: pd.DataFrame,
                   theory_doc: dict | None = None, metric: str = HEADLINE_METRIC) -> dict:
    """One study's headline numbers at `metric`: per strategy its own ε, the common ε, B_crit (value or bound,
    interval kind), the overhead-based critical batch, the regimes at the common ε, the largest linear and
    first stagnating batch sizes; the fastest strategy per batch size; for least squares the predicted and
    measured lsr breakdown."""
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
        strategies[strategy] = {
            "own_threshold": own.get("threshold"),
            "own_source_batch": own.get("threshold_batch_size"),
            "critical": critical_text(entry),
            "overhead_critical": overhead_text(entry),
            "largest_linear": entry.get("largest_linear_batch_size"),
            "first_stagnation": entry.get("first_stagnation_batch_size"),
            "regimes": regimes_text(rows) if not rows.empty else "steps to result per batch size in tuned.csv",
            "own_critical": critical_text(own) if own else "n/a",
            "own_regimes": regimes_text(own_rows[own_rows["strategy"] == strategy]),
        }
    tuned_entry = ((critical.get("strategies") or {}).get("tuned") or {}).get(metric) or {}
    headline = {
        "study": name, "description": study.get("description", ""), "metric": metric,
        "common_threshold": common_doc.get("threshold"), "strategies": strategies,
        "common_rule": common_rule_text(study),
        "fastest": fastest_per_batch(common_rows),
        "tuned_present": "tuned" in study["strategies"],
        "tuned": tuned_text(tuned_entry),
        "eta0_check": (eta0_against_tuned(study["eta0"], study["base_batch"], tuned_entry.get("eta_star") or {})
                       if "eta0" in study and any(s != "tuned" for s in study["strategies"]) else None),
    }
    if theory_doc is not None and "lsr" in study["strategies"]:
        measured = measured_breakdown(common_rows[common_rows["strategy"] == "lsr"], study["base_batch"])
        predicted = theory_doc.get("predicted_lsr_breakdown")
        headline["theory"] = {**{k: theory_doc[k] for k in ("lambda_max", "beta", "stability_limit",
                                                             "mbb_critical_batch", "predicted_lsr_breakdown")},
                              "measured_lsr_breakdown": measured,
                              "agrees": breakdown_agrees(predicted, measured)}
    return headline


def render_headline(h: dict) -> str:
    lines = [f"## {h['study']}: {h['description']}", "",
             f"Training loss; common ε = {_fmt(h['common_threshold'], 4)} ({h['common_rule']})."]
    if "theory" in h:
        t = h["theory"]
        verdict = {True: "agrees (at the predicted batch size or one doubling earlier)",
                   False: "DISAGREES", None: "no breakdown predicted or measured"}[t["agrees"]]
        lines += ["", f"Theory: λ₁ = {_fmt(t['lambda_max'], 4)}, β = {_fmt(t['beta'], 4)}, 2/λ₁ = "
                  f"{_fmt(t['stability_limit'], 4)}, Ma et al.'s m* = β/λ₁ + 1 = {_fmt(t['mbb_critical_batch'], 3)}. "
                  f"LSR breakdown predicted at m = {t['predicted_lsr_breakdown']}, measured at m = "
                  f"{t['measured_lsr_breakdown']}: {verdict}."]
    lines += ["", "| strategy | own ε (source m) | B_crit at common ε | overhead critical batch | largest linear m "
              "| first stagnating m |", "|---|---|---|---|---|---|"]
    for s, v in h["strategies"].items():
        lines.append(f"| {s} | {_fmt(v['own_threshold'], 4)} ({v['own_source_batch'] or 'fixed'}) | {v['critical']} | "
                     f"{v['overhead_critical']} | {v['largest_linear'] or '—'} | {v['first_stagnation'] or '—'} |")
    lines += [""] + [f"- {s} regimes (speedup) at common ε: {v['regimes']}" for s, v in h["strategies"].items()]
    fastest = ", ".join(f"{m}: {s or 'none'}" for m, s in h["fastest"].items())
    lines += [f"- fastest strategy per batch size at common ε: {fastest}"]
    if not h["tuned_present"]:
        lines += ["- tuned: not in this study (no comparison of a tuned learning rate against the fixed rules)"]
    elif h.get("tuned"):
        lines += [f"- {h['tuned']}"]
    if h.get("eta0_check"):
        lines += [f"- {h['eta0_check']}"]
    lines += [f"- {line}" for line in h.get("noise", [])]
    return "\n".join(lines) + "\n"


def comparison_headline(name: str, spec: dict, table: pd.DataFrame) -> dict:
    """A comparison's curve, its common ε and each study's B_crit there, from its speedup.csv (the rows of
    `batchscale.analysis.comparison`, whose ``common`` rows carry the critical-batch columns)."""
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
                       "ideal_at_largest": float(largest["ideal_speedup"])})
    first = common.iloc[0] if len(common) else {}
    return {"comparison": name, "title": spec.get("title") or name, "strategy": str(first.get("strategy", "")),
            "metric": str(first.get("metric", "")), "common_threshold": float(first.get("threshold", math.nan)),
            "common_rule": spec.get("common_threshold", "smallest"), "curves": curves}


def render_comparison(h: dict) -> str:
    lines = [f"## Comparison {h['comparison']}: {h['title']}", "",
             f"Curve: {h['strategy']}, {h['metric'].replace('_', ' ')}; common ε = {_fmt(h['common_threshold'], 4)} "
             f"(the {h['common_rule']} of the studies' own ε).", ""]
    for c in h["curves"]:
        fit = f"fit {_fmt(c['b_crit'])}, interval [{_fmt(c['b_crit_low'])}, {_fmt(c['b_crit_high'])}] ({c['interval_kind']})"
        report = c["b_crit_report"] or "not estimable"
        lines.append(f"- {c['label']} ({c['study']}): B_crit {report} ({fit}); speedup at m = {c['largest_batch']}: "
                     f"{_fmt(c['speedup_at_largest'])} (ideal {_fmt(c['ideal_at_largest'])})")
    return "\n".join(lines) + "\n"


def render_summary(headlines: list[dict], comparisons: list[dict] = ()) -> str:
    head = ("# batchscale: summary of the run\n\nOne section per study, from its critical_batch.json, speedup.csv "
            "and speedup_common.csv (and theory.json for least squares). k(m) is the mean over seeds of the steps "
            "to reach ε; regimes: linear while the efficiency k(m0) m0 / (k(m) m) ≥ 0.8, stagnation once "
            "doubling m cuts k by less than 10%. B_crit is the fit k = S_min (1 + B_crit/m), given as a bound "
            "when outside the measured range. Where a study traces the noise scale, its line sets B_simple = tr Σ/|G|² "
            "at ε (noise_scale.csv) beside B_crit at the same ε, with their ratio.\n\n")
    return head + "\n".join([render_headline(h) for h in headlines] + [render_comparison(h) for h in comparisons])


def read_comparison(results: Path, name: str, spec: dict) -> dict:
    return comparison_headline(name, spec, pd.read_csv(Path(results) / "comparisons" / name / "speedup.csv"))


def read_study(results: Path, name: str, study: dict) -> dict:
    folder = Path(results) / name
    theory_path = folder / "theory.json"
    critical = json.loads((folder / "critical_batch.json").read_text())
    headline = study_headline(name, study, critical,
                              pd.read_csv(folder / "speedup.csv"), pd.read_csv(folder / "speedup_common.csv"),
                              json.loads(theory_path.read_text()) if has_theory(study) else None)
    if noise_traced(study):
        headline["noise"] = noise_lines(pd.read_csv(folder / "noise_scale.csv"), critical)
    return headline


# --------------------------------------------------------------------------------------------
# Command


def _theory_command(args) -> None:
    from batchscale.data import load_dataset

    study = json.loads(args.study_json)
    splits = load_dataset(study["dataset"], download=False)
    doc = least_squares_theory(design_matrix(splits.train_x.double().numpy()), study["eta0"],
                               study["base_batch"], study["batch_sizes"],
                               float(study.get("optimizer", {}).get("momentum", 0.0)))
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


def _write_command(args) -> None:
    studies = json.loads(args.studies_json)
    headlines = [read_study(Path(args.results), name, study) for name, study in studies.items()]
    comparisons = [read_comparison(Path(args.results), name, spec)
                   for name, spec in json.loads(args.comparisons_json or "{}").items()]
    Path(args.out).write_text(render_summary(headlines, comparisons))
    if args.json:
        Path(args.json).write_text(json.dumps(headlines, indent=2, default=str) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m batchscale.summary", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("theory", help="λ₁, β and the predicted lsr breakdown of a least-squares study")
    t.add_argument("--study-json", required=True)
    t.add_argument("--out", required=True)
    w = sub.add_parser("write", help="results/summary.md from every study's analysis files")
    w.add_argument("--studies-json", required=True)
    w.add_argument("--results", default="results")
    w.add_argument("--out", required=True)
    w.add_argument("--json", default=None)
    w.add_argument("--comparisons-json", default=None, help="{name: spec} of the comparisons to summarise")
    args = parser.parse_args(argv)
    {"theory": _theory_command, "write": _write_command}[args.command](args)


if __name__ == "__main__":
    main()
