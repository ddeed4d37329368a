"""The noise-scale lines of summary.md (issue 22), from noise_vs_tuned.csv's rows in summary.json.

B_simple is set beside the **tuned** B_crit of the same study at the same eps (McCandlish et al.'s B_crit ~
B_noise holds for a rate re-tuned at every batch size), with the spread over seeds and B_crit's interval; the
fixed-rate relation B_crit(eta) ~ B_noise x / (1 - x) is a second line for blr, a check and not a verdict.
Where the study has no tuned strategy the line says that the comparison needs one instead of giving a ratio.
Computes nothing: every number is the table's.
"""

from __future__ import annotations

import math

SCOPE_TEXT = {"common": "the common ε", "tuned_own": "tuned's own ε"}


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def _b_simple_text(r: dict) -> str:
    text = (f"B_simple = {_fmt(r['b_simple'])} [{_fmt(r['b_simple_low'])}, {_fmt(r['b_simple_high'])}] "
            f"(seed range of {r['n_runs']} runs)")
    if r.get("b_simple_exact") is not None:
        text += f", exact {_fmt(r['b_simple_exact'])}"
    medians = r.get("_medians") or _fmt(r["b_simple_median_all_batches"])
    return (text + f"; median over every batch size {medians}; "
            f"{_fmt(100 * r['invalid_fraction'] if r.get('invalid_fraction') is not None else None, 2)}% of "
            f"windows invalid")


def _tuned_text(r: dict) -> str:
    report = r.get("tuned_B_crit_report") or ""
    if report[:1] in "<>" and report:
        bound = float(report[1:])
        ratio = bound / r["b_simple"] if r.get("b_simple") else None
        return f"tuned B_crit {report} (a bound); B_crit/B_simple {report[0]} {_fmt(ratio)}"
    if r.get("tuned_B_crit") is None:
        return "tuned B_crit not estimable; B_crit/B_simple not estimable"
    return (f"tuned B_crit = {_fmt(r['tuned_B_crit'])} [{_fmt(r['tuned_B_crit_low'])}, "
            f"{_fmt(r['tuned_B_crit_high'])}] ({r['tuned_interval_kind']}); B_crit/B_simple = {_fmt(r['ratio'])} "
            f"[{_fmt(r['ratio_low'])}, {_fmt(r['ratio_high'])}] (both intervals)"
            + (f", with the exact B_simple {_fmt(r['ratio_exact'])}" if r.get("ratio_exact") is not None else ""))


def noise_tuned_line(r: dict) -> str:
    """One row of noise_vs_tuned.csv in words."""
    head = (f"noise scale ({r['strategy']} runs at m = {r['source_batch']}{r.get('_same', '')}, two-batch, at "
            f"{SCOPE_TEXT.get(r['eps_scope'], r['eps_scope'])} = {_fmt(r['threshold'], 4)}): ")
    if r.get("b_simple") is None:
        return head + "no run at that batch size reached ε with a valid B_simple; no comparison"
    if r["comparison"] != "tuned":
        return head + _b_simple_text(r) + ("; the comparison with the critical batch needs a tuned strategy "
                                           "(a rate re-tuned at every batch size), which this study does not run: "
                                           "no ratio")
    return head + _b_simple_text(r) + "; " + _tuned_text(r)


def fixed_rule_line(r: dict) -> str | None:
    """blr's fixed-rate check of a common-eps row; None for other rows."""
    if r["strategy"] != "blr" or r["eps_scope"] != "common" or r.get("x") is None:
        return None
    return (f"fixed-rule check (blr, a second line, not a verdict on the noise scale): x = η/η_max = "
            f"{_fmt(r['eta'])}/{_fmt(r['eta_max'])} = {_fmt(r['x'])}, B_simple·x/(1 − x) = "
            f"{_fmt(r['fixed_rule_B_crit_predicted'])} against blr's measured B_crit {_measured(r)} at the common ε "
            f"(measured/predicted {_fmt(r['fixed_ratio_measured_over_predicted'])})")


def _measured(r: dict) -> str:
    """blr's measured B_crit: its estimate, else its report (a bound such as "> 64"), else not estimable."""
    if r.get("fixed_B_crit_measured") is not None:
        return _fmt(r["fixed_B_crit_measured"])
    report = r.get("fixed_B_crit_report")
    return str(report) if report not in (None, "") else "not estimable"


def _merge_same_runs(rows: list[dict]) -> list[dict]:
    """Rows whose B_simple comes from the same runs (at m0 every fixed strategy trains the same run) as one row
    naming every strategy, with the per-strategy medians over every batch size and invalid fractions."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["eps_scope"], r["source_batch"], r.get("b_simple"), r.get("b_simple_low"), r.get("b_simple_high"))
        groups.setdefault(key, []).append(r)
    merged = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        names = ", ".join(str(r["strategy"]) for r in group)
        medians = ", ".join(f"{_fmt(r['b_simple_median_all_batches'])} ({r['strategy']})" for r in group)
        merged.append({**group[0], "strategy": names, "_same": " (the same runs: the strategies coincide at m0)",
                       "_medians": medians})
    return merged


def noise_tuned_lines(rows: list[dict]) -> list[str]:
    """The study's noise lines: each row (rows from the same runs merged), then blr's fixed-rule check."""
    lines = [noise_tuned_line(r) for r in _merge_same_runs(rows)]
    return lines + [line for line in (fixed_rule_line(r) for r in rows) if line is not None]
