"""results/summary.md, the one-page answer: each study's headline numbers and each comparison's critical batch
sizes at its common eps, in words.

Renders the headline numbers of `batchscale.analysis.headline` (results/summary.json); computes nothing.
`main` is the command the summary rule calls: it has the analysis write summary.json, then writes the page
from that file's numbers:

    python -m batchscale.report.summary write --studies-json JSON --results results --out results/summary.md \
        [--json results/summary.json] [--comparisons-json JSON]
"""

from __future__ import annotations

import math

from batchscale.report.branching_summary import branching_line
from batchscale.report.noise_summary import noise_tuned_lines

REGIME_SHORT = {"base": "base", "linear": "linear", "diminishing": "diminishing", "stagnation": "stagnation",
                "not_reached": "not reached", "trivial": "trivial", "missing": "missing",
                "below_base": "below m0", "superlinear": "superlinear (efficiency > 1)",
                "unresolved": "linear unresolved (interval below the cut-off)", "no_base": "no regime (k(m0) not reached)"}
COMMON_RULE_TEXT = {"fixed": "a fixed ε, the same for every strategy",
                    "smallest": "the strictest of the strategies' own ε",
                    "largest": "the loosest of the strategies' own ε"}
AGREEMENT_TEXT = {True: "agrees (at the predicted batch size or one doubling earlier)",
                  False: "DISAGREES", None: "no breakdown predicted or measured"}
INTRODUCTION = (
    "# batchscale: summary of the run\n\nOne section per study, from its critical_batch.json, speedup.csv "
    "and speedup_common.csv (and theory.json for least squares). k(m) is the mean over seeds of the steps "
    "to reach ε; regimes: linear while the lower bound of the efficiency k(m0) m0 / (k(m) m) "
    "interval is ≥ 0.8 (efficiency above 1: superlinear), stagnation once doubling m cuts k by less than 10%, "
    "none where k(m0) is not finite. The overhead-based critical batch (Zhang et al. 2024) comes first; B_crit is "
    "the fit k = S_min (1 + B_crit/m), given as a bound when outside the measured range and rejected when its "
    "log-RMSE is above the cut-off. Where a study traces the noise scale, its lines set "
    "B_simple = tr Σ/|G|² at ε, read from the smallest batch size's runs (noise_vs_tuned.csv), beside the tuned "
    "strategy's B_crit at the same ε, with their ratio; for blr the fixed-rate relation B_crit(η) ≈ B_simple·x/(1 − x), "
    "x = η/η_max, is a second check.\n\n")


def _number(value) -> float:
    """A number of summary.json as a float (null, a value that could not be estimated, as NaN)."""
    return float("nan") if value is None else float(value)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def _quoted(report) -> str:
    """The analysis' text of a value (a bound such as "> 128" or a value) as written."""
    return str(report) if isinstance(report, str) else _fmt(report)


def critical_text(critical: dict) -> str:
    """B_crit as the analysis wrote it ("< 4", "> 128" or a value), with its interval and interval kind."""
    if critical["report"] is None:
        return "not estimable"
    if critical.get("rejected"):
        return f"rejected (the hyperbola misses k(m): log-RMSE {_fmt(critical.get('log_rmse'), 2)})"
    text = _quoted(critical["report"])
    if critical["bound"] is None and critical["low"] is not None and critical["high"] is not None:
        text += f" [{_fmt(critical['low'])}, {_fmt(critical['high'])}]"
    text += f" ({critical['interval_kind']})"
    if critical["bound"] is None and not critical["fit_meaningful"]:
        text += ", fit not meaningful"
    return text


def overhead_text(overhead: dict) -> str:
    """The overhead-based critical batch, with its interval where it is an estimate."""
    if overhead["report"] is None:
        return "n/a"
    text = _quoted(overhead["report"])
    if overhead["low"] is not None and overhead["high"] is not None and overhead["bound"] is None:
        text += f" [{_fmt(overhead['low'])}, {_fmt(overhead['high'])}] ({overhead['interval_kind']})"
    return text


def regimes_text(steps: list[dict]) -> str:
    """"4 base, 8 linear ×1.9, 16 diminishing ×2.5, ..." from a strategy's regimes and speedups."""
    parts = []
    for step in steps:
        speed = _number(step["speedup"])
        speed_text = f" ×{speed:.2g}" if math.isfinite(speed) and step["regime"] != "base" else ""
        parts.append(f"{step['batch_size']} {REGIME_SHORT.get(step['regime'], step['regime'])}{speed_text}")
    return ", ".join(parts)


def tuned_text(tuned: dict | None) -> str | None:
    """The tuned search's best learning rate per batch size, where it hit the edge of the searched range, and
    B_noise of the fitted optimal-step law (None without a tuned search)."""
    if tuned is None:
        return None
    rates = ", ".join(f"{m}: {_fmt(rate, 3)}" for m, rate in tuned["eta_star"].items())
    text = f"tuned η*(m) at its own ε = {_fmt(tuned['threshold'], 4)}: {rates}"
    status = tuned.get("edge_status") or {}
    if status:
        groups = {}
        for m, state in status.items():
            groups.setdefault(state, []).append(str(m))
        text += "; η*(m) " + "; ".join(f"{state} at m = {', '.join(sizes)}" for state, sizes in groups.items())
        if any("edge" in state for state in groups):
            text += " (at an edge the optimum may lie outside the range tried: those k are upper bounds)"
    elif tuned["lr_edge"]:
        edges = ", ".join(f"{m} ({side})" for m, side in tuned["lr_edge"].items())
        text += f"; η* at the edge of the searched range at m = {edges}, so those rates are bounds"
    noise = tuned["B_noise"]
    if noise.get("estimate") is not None:
        text += (f"; B_noise = {_fmt(noise['estimate'])} [{_fmt(noise.get('low'))}, {_fmt(noise.get('high'))}] "
                 f"({noise.get('interval_kind')}, fit max |log residual| "
                 f"{_fmt(tuned['eta_fit_max_abs_log_residual'], 2)})")
    return text


def eta0_text(check: dict | None) -> str | None:
    """The fixed rules' eta0 against the tuned rate at m0 (None when tuned has no rate there)."""
    if check is None:
        return None
    tolerance = check["tolerance"]
    verdict = (f"within ×{tolerance} of it" if check["within"] else
               f"NOT within ×{tolerance} of it: the fixed rules start from a rate the search did not pick")
    return (f"fixed rules' η0 = {_fmt(check['eta0'], 3)} against tuned η*(m0 = {check['base_batch']}) = "
            f"{_fmt(check['eta_star_base'], 3)} (ratio {check['ratio']:.2f}): {verdict}")


def noise_text(strategy: str, eps, n: dict) -> str:
    """One summary line: B_simple at ε (median over batch sizes, per-seed range), B_crit and their ratio."""
    text = (f"noise scale ({strategy}, two-batch, at its own ε = {_fmt(eps, 4)}): B_simple at ε = "
            f"{_fmt(n['b_simple_median'])} (median over {n['n_batch_sizes']} batch sizes, {n['n_runs']} runs; "
            f"per-seed range {_fmt(n['b_simple_low'])}–{_fmt(n['b_simple_high'])}); measured B_crit")
    if n["bound"] is not None:
        return text + (f" {n['bound']} {_fmt(n['bound_value'])}; B_crit/B_simple {n['bound']} "
                       f"{_fmt(n['ratio_bound'])} (B_crit is a bound)")
    if not math.isfinite(_number(n["B_crit"])):
        return text + " not estimable; B_crit/B_simple not estimable"
    interval = (f" [{_fmt(n['B_crit_low'])}, {_fmt(n['B_crit_high'])}]"
                if math.isfinite(_number(n["B_crit_low"])) and math.isfinite(_number(n["B_crit_high"])) else "")
    ratio_range = (f" [{_fmt(n['ratio_low'])}, {_fmt(n['ratio_high'])}] (from B_crit's interval)"
                   if interval else "")
    return text + (f" = {_fmt(n['B_crit'])}{interval} ({n['interval_kind']}); B_crit/B_simple = "
                   f"{_fmt(n['ratio'])}{ratio_range}")


def noise_lines(noise: list[dict]) -> list[str]:
    """The noise-scale lines of a study, one per strategy."""
    return [noise_text(n["strategy"], n["threshold"], n["ratio"]) if n["ratio"] is not None else
            f"noise scale ({n['strategy']}): no run reached ε with a valid B_simple; ratio not estimable"
            for n in noise]


def theory_line(t: dict) -> str:
    """The least-squares theory check in one paragraph."""
    return (f"Theory: λ₁ = {_fmt(t['lambda_max'], 4)}, β = {_fmt(t['beta'], 4)}, 2/λ₁ = "
            f"{_fmt(t['stability_limit'], 4)}, Ma et al.'s m* = β/λ₁ + 1 = {_fmt(t['mbb_critical_batch'], 3)}. "
            f"LSR breakdown predicted at m = {t['predicted_lsr_breakdown']}, measured at m = "
            f"{t['measured_lsr_breakdown']}: {AGREEMENT_TEXT[t['agrees']]}." + _recursion_text(t))


def _recursion_text(t: dict) -> str:
    """The expected-loss recursion's k(m) against the measured one (the theory figure's middle panel)."""
    found = t.get("recursion_agreement") or {}
    parts = [f"{strategy} within {100 * a['max_deviation']:.1f}% up to m = {a['up_to']}" for strategy, a in found.items()]
    return f" Recursion's k(m) against the measured k(m): {'; '.join(parts)}." if parts else ""


def _source_text(v: dict, h: dict) -> str:
    """Where a strategy's own eps came from: its source batch size, a fixed rule, or no batch size that trained
    (every seed's loss must fall 10% for its curve to set a quantile)."""
    if v.get("own_source_batch"):
        return str(v["own_source_batch"])
    return "fixed" if str(h.get("threshold_rule") or "").startswith("fixed") else "no batch size trained"


def rule_line(rule: str | None) -> str:
    """The own-eps rule in words: the same for every strategy, tuned included."""
    if not rule:
        return "Own ε: rule not recorded."
    if rule.startswith("fixed"):
        return f"Own ε: {rule}, the same value for every strategy."
    return (f"Own ε: {rule} (each seed's curve at the source batch resampled uniformly in steps, its quantile, the "
            "largest over seeds); tuned applies the same rule to its best trial's seeds at the largest m.")


def warmup_lines(warmup: dict) -> list[str]:
    """Per warmed-up strategy: the batch sizes where k(m) < factor x its warm-up, or that it is well past it."""
    lines = []
    for strategy, w in warmup.items():
        factor = f"{w['factor']:g}×"
        if not w["flagged"]:
            lines.append(f"{strategy}: k(m) well past its warm-up at every m (≥ {factor} it)")
            continue
        steps = (f"{w['warmup_low']:.0f} steps" if w["warmup_low"] == w["warmup_high"]
                 else f"{w['warmup_low']:.0f}–{w['warmup_high']:.0f} steps")
        text = (f"{strategy} reaches ε within {factor} its warm-up ({steps}) at m = "
                f"{', '.join(str(m) for m in w['flagged'])}")
        if w["inside"]:
            text += f" (inside it at m = {', '.join(str(m) for m in w['inside'])})"
        lines.append(text + ": there k(m) measures the warm-up more than the scaling rule")
    return lines


def render_headline(h: dict) -> str:
    """A study's section of summary.md from its headline numbers (`analysis.headline.study_headline`)."""
    lines = [f"## {h['study']}: {h['description']}", "",
             f"Training loss; common ε = {_fmt(h['common_threshold'], 4)} ({COMMON_RULE_TEXT[h['common_rule']]}).",
             "", rule_line(h.get("threshold_rule"))]
    if "theory" in h:
        lines += ["", theory_line(h["theory"])]
    lines += ["", "| strategy | own ε (source m) | overhead critical batch | B_crit at common ε | largest linear m "
              "| first stagnating m |", "|---|---|---|---|---|---|"]
    for s, v in h["strategies"].items():
        lines.append(f"| {s} | {_fmt(v['own_threshold'], 4)} ({_source_text(v, h)}) | "
                     f"{overhead_text(v['overhead_critical'])} | {critical_text(v['critical'])} | "
                     f"{v['largest_linear'] or '—'} | {v['first_stagnation'] or '—'} |")
    lines += [""] + [f"- {s} regimes (speedup) at common ε: "
                     + (regimes_text(v["regimes"]) if v["regimes"] is not None
                        else "steps to result per batch size in tuned.csv")
                     for s, v in h["strategies"].items()]
    fastest = ", ".join(f"{m}: {s or 'none'}" for m, s in h["fastest"].items())
    lines += [f"- fastest strategy per batch size at common ε: {fastest}"]
    if not h["tuned_present"]:
        lines += ["- tuned: not in this study (no comparison of a tuned learning rate against the fixed rules)"]
    elif h.get("tuned"):
        lines += [f"- {tuned_text(h['tuned'])}"]
    if h.get("eta0_check"):
        lines += [f"- {eta0_text(h['eta0_check'])}"]
    lines += [f"- warm-up check (common ε): {line}" for line in warmup_lines(h.get("warmup") or {})]
    lines += [f"- {line}" for line in (noise_tuned_lines(h["noise_tuned"]) if "noise_tuned" in h
                                       else noise_lines(h.get("noise", [])))]
    lines += [f"- {branching_line(h['branching'])}"] if h.get("branching") else []
    return "\n".join(lines) + "\n"


def render_comparison(h: dict) -> str:
    """A comparison's section of summary.md (`analysis.headline.comparison_headline`)."""
    lines = [f"## Comparison {h['comparison']}: {h['title']}", "",
             f"Curve: {h['strategy']}, {h['metric'].replace('_', ' ')}; common ε = {_fmt(h['common_threshold'], 4)} "
             f"(the {h['common_rule']} of the studies' own ε).", ""]
    for c in h["curves"]:
        fit = f"fit {_fmt(c['b_crit'])}, interval [{_fmt(c['b_crit_low'])}, {_fmt(c['b_crit_high'])}] ({c['interval_kind']})"
        report = c["b_crit_report"] or "not estimable"
        speed = _fmt(c["speedup_at_largest"])
        if all(math.isfinite(_number(c.get(k))) for k in ("speedup_low_at_largest", "speedup_high_at_largest")):
            speed += f" [{_fmt(c['speedup_low_at_largest'])}, {_fmt(c['speedup_high_at_largest'])}]"
        lines.append(f"- {c['label']} ({c['study']}): B_crit {report} ({fit}); speedup at m = {c['largest_batch']}: "
                     f"{speed} (ideal {_fmt(c['ideal_at_largest'])})")
    verdicts = [conclusion_text(c) for c in h.get("conclusions", [])]
    if verdicts:
        lines += ["", "Conclusion (told apart only where the intervals are disjoint): " + "; ".join(verdicts) + "."]
    return "\n".join(lines) + "\n"


def conclusion_text(c: dict) -> str:
    """One pair's verdict: "SGD's B_crit above AdamW's" or "B_crit, SGD vs AdamW: not resolved (intervals overlap)"."""
    if c["verdict"] == "not resolved":
        return f"{c['quantity']}, {c['a']} vs {c['b']}: not resolved (the intervals overlap or one is missing)"
    side = "above" if c["verdict"] == "higher" else "below"
    return f"{c['a']}'s {c['quantity']} {side} {c['b']}'s"


def render_summary(doc: dict) -> str:
    """summary.md from summary.json's document ({"studies": [...], "comparisons": [...]})."""
    return INTRODUCTION + "\n".join([render_headline(h) for h in doc["studies"]] +
                                    [render_comparison(h) for h in doc["comparisons"]])
