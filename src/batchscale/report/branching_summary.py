"""The summary's line on the local critical batch by branching (summary.json's ``branching`` of a study,
`batchscale.analysis.branching.branching_headline`), in words; computes nothing."""

from __future__ import annotations

BRACKET_WORDS = {"interval": "in", "at_least": "", "below": "", "missing": ""}


def _examples(value) -> str:
    return f"{int(value):,}"


def _tolerance(b: dict) -> str:
    tolerance = b.get("tolerance")
    if tolerance is None:
        return "within tolerance of k = 1's loss"
    if b.get("tolerance_kind") == "absolute":
        return f"within {float(tolerance):g} nats of k = 1's loss"
    return f"within {100 * float(tolerance):.3g}% of k = 1's loss"


def branching_line(b: dict) -> str:
    """"local critical batch by branching from lsr at B = 4, seed 0 (...): at 64 examples < 8; at 1,024 examples
    in [16, 32); ..." from a study's branching headline; a bracket marked * passed again above its first
    failure."""
    ks = b.get("k") or []
    tried = f"k = {', '.join(str(k) for k in ks)}" if ks else "k"
    delta = f"{_examples(b['delta_examples'])} examples" if b.get("delta_examples") is not None else "Δ examples"
    head = (f"local critical batch by branching from {b.get('strategy')} at B = {b.get('base_batch')}, seed "
            f"{b.get('seed')} (branches of {delta} at k·B for {tried}; the largest k·B whose loss stays "
            f"{_tolerance(b)})")
    points = b.get("checkpoints") or []
    if not points:
        return head + ": no checkpoint in local_critical_batch.csv"
    parts = []
    for point in points:
        word = BRACKET_WORDS.get(point["bracket"], "")
        text = f"{word} {point['bracket_text']}".strip()
        parts.append(f"at {_examples(point['examples'])} examples {text}{'*' if point.get('non_monotone') else ''}")
    note = " (* a larger k passed again after the first that failed: noisy)" if any(
        p.get("non_monotone") for p in points) else ""
    return head + ": " + "; ".join(parts) + note
