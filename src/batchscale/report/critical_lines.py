"""A critical_batch.json document in words: the lines a study's analyze log and `batchscale analyze` print.

Reads the document; computes nothing.
"""

from __future__ import annotations


def interval_text(quantity: dict | None) -> str:
    """``[low, high] (kind)`` of a quantity of the document, ``(no interval)`` without one."""
    quantity = quantity or {}
    kind = quantity.get("interval_kind") or "none"
    if kind.startswith("none") or quantity.get("low") is None and quantity.get("high") is None:
        return "(no interval)"
    low = "?" if quantity.get("low") is None else f"{quantity['low']:.4g}"
    high = "inf" if quantity.get("high") is None else f"{quantity['high']:.4g}"
    return f"[{low}, {high}] ({kind.replace('_', ' ')})"


def critical_batch_lines(document: dict) -> list[str]:
    """The headline of a critical_batch.json document.

    Args:
      document: the document (`batchscale.analysis.documents.critical_document`).

    Returns:
      a warning per source batch size with a seed that never reached its own eps, then per strategy and
      metric: eps, B_crit (or its bound) and S_min with their intervals and interval kind, the log-RMSE, the
      overhead-based critical batch and the regimes (largest linear batch size, first stagnating one).
    """
    lines = []
    for metric, entry in (document.get("thresholds") or {}).items():
        for strategy, check in (entry.get("strategies") or {}).items():
            if check.get("source_seeds_all_reached") is False:
                lines.append(f"WARNING: {strategy} {metric}: a seed of the source batch size "
                             f"{check.get('source_batch_size')} never reached its own eps")
    for strategy, per_metric in (document.get("strategies") or {}).items():
        for metric, entry in per_metric.items():
            b_crit, s_min = entry.get("B_crit") or {}, entry.get("S_min") or {}
            eps = entry.get("threshold")
            where = f"{strategy} {metric}" + (f" at eps = {eps:.4g}" if eps is not None else "")
            if b_crit.get("estimate") is None and b_crit.get("report") is None:
                lines.append(f"{where}: no fit ({entry.get('note', 'not enough batch sizes reached the target')})")
            else:
                report = b_crit.get("report") or f"{b_crit['estimate']:.4g}"
                b_text = f"B_crit {report}" if report[:1] in "<>" else f"B_crit = {report}"
                s_text = "S_min = n/a" if s_min.get("estimate") is None else f"S_min = {s_min['estimate']:.4g}"
                rmse = entry.get("log_rmse")
                lines.append(f"{where}: {b_text} {interval_text(b_crit)}, {s_text} {interval_text(s_min)}"
                             + (f", log-RMSE {rmse:.3g}" if rmse is not None else "")
                             + (" -- REJECTED: the hyperbola misses k(m) by more than the cut-off; quote the "
                                "overhead-based critical batch" if b_crit.get("rejected") else ""))
            overhead = (entry.get("overhead_critical_batch") or {})
            direct = overhead.get("direct") or {}
            linear = entry.get("largest_linear_batch_size")
            stagnation = entry.get("first_stagnation_batch_size")
            lines.append(
                f"  overhead-based critical batch ({100 * overhead.get('overhead', 0.2):g}% over linear): "
                f"{direct.get('report') or 'n/a'}; regimes: linear up to "
                f"{linear if linear is not None else 'none beyond m0'}, stagnation from "
                f"{stagnation if stagnation is not None else 'none measured'}")
    return lines
