"""The critical batch predicted from short runs (study key `predict`): B_simple read at a target loss, its
interval, the trust verdict and the cost (results/{study}/prediction.json).

Why B_simple: McCandlish et al. (2018) find B_crit ~ B_noise ~ B_simple for the learning rate re-tuned at
every batch size, B_simple read at the loss where B_crit is measured. So B_simple is read where the
prediction runs' training loss crosses the target loss eps:

- reading window: the evaluation points of every prediction run whose training loss lies in
  [eps / band, eps x band] (`predict.loss_band`); B_pred is the median of B_simple (the trailing-window
  ratio of `analysis.noise.windowed_noise_scale`) over those points of every seed;
- interval: percentile bootstrap of that median, resampling seeds, then points within each drawn seed;
- phases: the median B_simple over the earlier window [eps x band, eps x band^2] and the later one
  [eps / band^2, eps / band]; their spread with the reading window's (largest / smallest median) is the
  path dependence;
- verdict: "trusted", or "cannot be trusted here: <reasons>" when no run reaches the window, high / low
  exceeds `trust.max_interval_ratio`, the fraction of the window's points without a valid estimate exceeds
  `trust.max_invalid_fraction`, or the phase spread exceeds `trust.max_phase_ratio`.

Units: B_simple and B_pred in examples; loss in nats; cost in CPU seconds (a trace's wall seconds x its
threads / the runs of its pack: the job's CPU budget, which the runs of a pack share).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from batchscale.analysis.noise import windowed_noise_scale
from batchscale.spec.predict import target_strategy

ESTIMATORS = {"exact": ("noise_g2_exact", "noise_trace_sigma_exact"), "two_batch": ("noise_g2", "noise_trace_sigma")}
PHASES = ("before", "at", "after")
BOOTSTRAP_SEED = 0
POINT_COLUMNS = ("seed", "step", "examples_seen", "train_loss", "b_two_batch", "invalid_two_batch", "b_exact",
                 "invalid_exact")


def trace_points(trace: dict, window: int) -> pd.DataFrame:
    """One prediction run's evaluation points with B_simple of both estimators (NaN where not traced).

    Args:
      trace: a trace as `store.traces.read_trace` returns it.
      window: the trailing window of `windowed_noise_scale`.

    Returns:
      POINT_COLUMNS; invalid_* is True where the window's mean |G|^2 <= 0 or nothing finite was traced.
    """
    points = trace["points"]
    n = len(points["step"])
    frame = pd.DataFrame({"seed": int(trace["attrs"]["seed"]), "step": np.asarray(points["step"], dtype=float),
                          "examples_seen": np.asarray(points["examples_seen"], dtype=float),
                          "train_loss": np.asarray(points["train_loss"], dtype=float)})
    for name, (g2_name, trace_name) in ESTIMATORS.items():
        g2 = np.asarray(points.get(g2_name, np.full(n, np.nan)), dtype=float)
        sigma = np.asarray(points.get(trace_name, np.full(n, np.nan)), dtype=float)
        b_simple, flagged = windowed_noise_scale(g2, sigma, window, centred=False)  # trailing, as documented
        frame[f"b_{name}"] = b_simple
        frame[f"invalid_{name}"] = flagged | ~np.isfinite(b_simple)
    return frame[list(POINT_COLUMNS)]


def phase_of(loss, target: float, band: float) -> np.ndarray:
    """Each point's phase: "before" (loss in (eps band, eps band^2]), "at" ([eps/band, eps band]), "after"
    ([eps/band^2, eps/band)), "" elsewhere."""
    loss = np.asarray(loss, dtype=float)
    phase = np.full(loss.shape, "", dtype=object)
    phase[(loss > target * band) & (loss <= target * band**2)] = "before"
    phase[(loss >= target / band) & (loss <= target * band)] = "at"
    phase[(loss >= target / band**2) & (loss < target / band)] = "after"
    return phase


def choose_estimator(window: pd.DataFrame, setting: str) -> str:
    """`setting` unless auto; auto takes exact where it is finite at half the reading window's points."""
    if setting != "auto":
        return setting
    if len(window) and np.isfinite(window["b_exact"]).mean() >= 0.5:
        return "exact"
    return "two_batch"


def bootstrap_median(by_seed: list[np.ndarray], samples: int, confidence: float) -> tuple[float, float]:
    """Percentile interval of the pooled median: seeds drawn with replacement, then each drawn seed's
    points with replacement (numpy seed BOOTSTRAP_SEED: deterministic)."""
    by_seed = [values for values in by_seed if values.size]
    if not by_seed:
        return float("nan"), float("nan")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    medians = np.empty(samples)
    for i in range(samples):
        chosen = rng.integers(0, len(by_seed), len(by_seed))
        pooled = [by_seed[c][rng.integers(0, by_seed[c].size, by_seed[c].size)] for c in chosen]
        medians[i] = np.median(np.concatenate(pooled))
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(medians, tail)), float(np.quantile(medians, 1.0 - tail))


def _median(values) -> float:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def phase_medians(points: pd.DataFrame, estimator: str) -> dict:
    """Median B_simple of the chosen estimator in each phase (NaN where the phase holds no valid point)."""
    return {phase: _median(points.loc[points["phase"] == phase, f"b_{estimator}"]) for phase in PHASES}


def reasons_not_trusted(reading: dict, trust: dict) -> list[str]:
    """Why the prediction cannot be trusted (empty: trusted), each with its measured value and the limit."""
    reasons = []
    if reading["n_points"] == 0 or not math.isfinite(reading["B_pred"]):
        return [f"no valid B_simple where the training loss is within x{reading['loss_band']:g} of the target "
                f"{reading['target_loss']:.4g} (lowest loss reached: {reading['lowest_loss']:.4g})"]
    ratio = reading["interval_ratio"]
    if not math.isfinite(ratio) or ratio > trust["max_interval_ratio"]:
        reasons.append(f"interval too wide (high/low = {ratio:.3g} > {trust['max_interval_ratio']:g})")
    if reading["invalid_fraction"] > trust["max_invalid_fraction"]:
        reasons.append(f"{reading['invalid_fraction']:.0%} of the reading window's points have no valid estimate "
                       f"(> {trust['max_invalid_fraction']:.0%})")
    if reading["phase_ratio"] > trust["max_phase_ratio"]:
        reasons.append(f"B_simple depends on the phase of training (largest/smallest phase median = "
                       f"{reading['phase_ratio']:.3g} > {trust['max_phase_ratio']:g})")
    return reasons


def read_prediction(points: pd.DataFrame, target: float, settings: dict) -> dict:
    """B_pred, its interval, the estimator, the phases and the verdict from the prediction runs' points.

    Args:
      points: POINT_COLUMNS of every prediction run (`trace_points`, concatenated).
      target: the target training loss eps (NaN: none).
      settings: the study's `predict` block (loss_band, estimator, bootstrap, trust).

    Returns:
      the reading (JSON-safe floats; NaN where not estimable) with "verdict" and "reasons".
    """
    band = float(settings["loss_band"])
    points = points.assign(phase=phase_of(points["train_loss"], target, band) if math.isfinite(target) else "")
    window = points[points["phase"] == "at"]
    estimator = choose_estimator(window, settings["estimator"])
    column = f"b_{estimator}"
    by_seed = [group[column].to_numpy(float)[np.isfinite(group[column].to_numpy(float))]
               for _, group in window.groupby("seed", sort=True)]
    low, high = bootstrap_median(by_seed, int(settings["bootstrap"]["samples"]),
                                 float(settings["bootstrap"]["confidence"]))
    medians = phase_medians(points, estimator)
    finite = [v for v in medians.values() if math.isfinite(v) and v > 0]
    reading = {
        "target_loss": float(target), "loss_band": band, "estimator": estimator, "quantity": "B_simple",
        "B_pred": _median(window[column]), "low": low, "high": high,
        "interval_kind": f"percentile_bootstrap (seeds, then points; {settings['bootstrap']['confidence']:g})",
        "interval_ratio": high / low if low > 0 else float("inf"),
        "n_points": int(sum(v.size for v in by_seed)), "n_seeds_in_window": int(sum(v.size > 0 for v in by_seed)),
        "invalid_fraction": float(window[f"invalid_{estimator}"].mean()) if len(window) else float("nan"),
        "invalid_fraction_two_batch": float(window["invalid_two_batch"].mean()) if len(window) else float("nan"),
        "B_simple_two_batch": _median(window["b_two_batch"]), "B_simple_exact": _median(window["b_exact"]),
        "phase_medians": medians, "phase_ratio": max(finite) / min(finite) if finite else float("nan"),
        "lowest_loss": float(points["train_loss"].min()) if len(points) else float("nan"),
    }
    reasons = reasons_not_trusted(reading, settings["trust"])
    reading["reasons"] = reasons
    reading["verdict"] = "trusted" if not reasons else "cannot be trusted here: " + "; ".join(reasons)
    return reading


def cpu_seconds(traces) -> float:
    """CPU seconds of the runs of `traces`: each run's share of its pack job, wall seconds x threads / runs
    in the pack (the trace's info_json pack_size; 1 where not recorded)."""
    total = 0.0
    for trace in traces:
        attrs = trace["attrs"]
        info = json.loads(attrs.get("info_json", "{}") or "{}")
        total += float(attrs["wall_seconds"]) * float(attrs.get("threads", 1) or 1) / float(info.get("pack_size", 1) or 1)
    return total


def target_from_critical(document: dict | None, strategy: str, metric: str = "train_loss",
                         scope: str = "own") -> float:
    """The target eps from a critical_batch.json document: the study's common eps (`scope` "common") or the own
    eps of `strategy` ("own"); NaN when absent."""
    if document is None:
        return float("nan")
    if scope == "common":
        value = ((document.get("common") or {}).get(metric) or {}).get("threshold")
    else:
        value = ((document.get("strategies", {}).get(strategy) or {}).get(metric) or {}).get("threshold")
    return float("nan") if value is None else float(value)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def prediction_document(study_name: str, study: dict, traces: list, grid_traces: list,
                        critical: dict | None, window: int) -> dict:
    """prediction.json: the reading (`read_prediction`), how it was read, the runs and the cost.

    Args:
      study_name: the study.
      study: its resolved config (`predict` block, noise_scale, strategies).
      traces: the prediction runs' traces (`read_trace`).
      grid_traces: the study grid's traces (for its CPU seconds; [] when not read).
      critical: the study's critical_batch.json (the target loss when predict.target_loss is null), or None.
      window: the trailing window of B_simple (the study's noise_scale.window).

    Returns:
      a JSON-safe dict (NaN written as null).
    """
    settings = study["predict"]
    if settings.get("target_loss") is not None:
        target, source = float(settings["target_loss"]), "predict.target_loss"
    else:
        strategy, scope = target_strategy(study), settings.get("target_threshold", "own")
        target = target_from_critical(critical, strategy, scope=scope)
        source = ("the study's common eps (critical_batch.json)" if scope == "common"
                  else f"own eps of {strategy} (critical_batch.json)")
    points = pd.concat([trace_points(trace, window) for trace in traces], ignore_index=True)
    reading = read_prediction(points, target, settings)
    spent, grid = cpu_seconds(traces), cpu_seconds(grid_traces)
    first = traces[0]["attrs"]
    return _json_safe({
        "study": study_name, **reading, "target_source": source,
        "target_scope": "given" if settings.get("target_loss") is not None else settings.get("target_threshold", "own"),
        "read_at": (f"median over seeds x evaluation points with training loss in [target/{reading['loss_band']:g}, "
                    f"target x {reading['loss_band']:g}]"),
        "runs": {"batch_size": int(first["batch_size"]), "lr": float(first["lr"]),
                 "seeds": sorted(int(t["attrs"]["seed"]) for t in traces),
                 "steps": [int(t["attrs"]["steps_total"]) for t in traces],
                 "status": [str(t["attrs"]["status"]) for t in traces]},
        "trust_limits": settings["trust"],
        "cost": {"prediction_cpu_seconds": spent, "grid_cpu_seconds": grid if grid_traces else float("nan"),
                 "fraction_of_grid": spent / grid if grid_traces and grid > 0 else float("nan"),
                 "grid_runs": len(grid_traces),
                 "measure": "wall seconds x threads / runs per pack, summed over runs"},
    })
