"""The grid of runs: which runs a resolved config asks for, where each one's trace lives, and each run's
fully resolved config (everything the engine needs, nothing else) with its hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from batchscale.spec.manifest import ROUND1_PATH, TRACE_PATH, TRIAL_PART
from batchscale.spec.optimizers import optimizer_settings
from batchscale.spec.search import first_round, refine_settings, refinement_exponents, refinement_lr
from batchscale.spec.strategies import TUNED, study_hyperparameters

_FIELD_PATTERNS = {"study": "[^/]+", "strategy": "[^/]+", "batch_size": r"\d+", "seed": r"\d+",
                   "trial": "(?:" + re.escape(TRIAL_PART).replace(r"\{trial\}", r"(?P<trial>\d+)") + ")?"}
_TRACE_PATH_PATTERN = re.compile("(?:^|/)" + re.sub(
    r"\\\{(\w+)\\\}",
    lambda m: _FIELD_PATTERNS[m.group(1)] if m.group(1) == "trial" else f"(?P<{m.group(1)}>{_FIELD_PATTERNS[m.group(1)]})",
    re.escape(TRACE_PATH)) + "$")


@dataclass(frozen=True)
class RunKey:
    study: str
    strategy: str
    batch_size: int
    seed: int
    trial: int | None = None  # the trial of a `tuned` search; None for the fixed strategies

    @property
    def trace_path(self) -> str:
        trial = "" if self.trial is None else TRIAL_PART.format(trial=self.trial)
        return TRACE_PATH.format(study=self.study, strategy=self.strategy, batch_size=self.batch_size,
                                 seed=self.seed, trial=trial)

    @classmethod
    def from_trace_path(cls, path) -> "RunKey | None":
        """The run a path names under the trace template, or None for a path outside it."""
        found = _TRACE_PATH_PATTERN.search(Path(path).as_posix())
        if found is None:
            return None
        trial = None if found["trial"] is None else int(found["trial"])
        return cls(found["study"], found["strategy"], int(found["batch_size"]), int(found["seed"]), trial)


def study_trials(study: dict) -> list[dict]:
    """The first-round trials of a study's `tuned` search (the same at every batch size); [] when it runs
    no `tuned`. load_config resolves them once into `tuning.trial_points`."""
    if TUNED not in study["strategies"]:
        return []
    points = study["tuning"].get("trial_points")
    return points if points is not None else first_round(study["tuning"])


def refinement_trials(study: dict) -> list[int]:
    """The trial numbers of the refinement round (K .. K+K2-1); [] without `tuning.refine` or `tuned`."""
    if TUNED not in study["strategies"]:
        return []
    first = len(study_trials(study))
    return [first + j for j in range(len(refinement_exponents(study["tuning"].get("refine"))))]


def is_refinement(config: dict, key: RunKey) -> bool:
    """Whether a run is a round-2 trial (its rate is read from ROUND1_PATH when it trains)."""
    return key.trial is not None and key.trial in refinement_trials(config["studies"][key.study])


def iter_runs(config: dict) -> Iterator[RunKey]:
    for study_name, study in config["studies"].items():
        trials = [t["trial"] for t in study_trials(study)] + refinement_trials(study)
        for strategy in study["strategies"]:
            for batch_size in study["batch_sizes"]:
                for trial in (trials if strategy == TUNED else [None]):
                    for seed in study["seeds"]:
                        yield RunKey(study_name, strategy, int(batch_size), int(seed), trial)


def run_optimizer(optimizer: dict, hyper: dict) -> dict:
    """A run's optimizer settings: the keys its optimizer reads (an SGD run's are exactly those it always had,
    so its config hash is unchanged), and for AdamW the run's own beta1, beta2, eps and weight decay as its
    strategy scaled them (in place of the study's base betas and eps)."""
    settings = optimizer_settings(optimizer)
    if settings.get("name") == "adamw":
        settings.pop("betas")
        settings.update({name: hyper[name] for name in ("beta1", "beta2", "eps", "weight_decay")})
    return settings


def run_config(config: dict, key: RunKey) -> dict:
    """The fully resolved config of one run: everything the engine needs, nothing else."""
    study = config["studies"][key.study]
    hyper = study_hyperparameters(study, key.strategy, key.batch_size)
    run = {
        "study": key.study,
        "strategy": key.strategy,
        "batch_size": key.batch_size,
        "seed": key.seed,
        "dataset": study["dataset"],
        "data_root": config["data_root"],
        "download": config["download"],
        "model": study["model"],
        "optimizer": run_optimizer(study["optimizer"], hyper),
        "eta0": study["eta0"],
        "base_batch": study["base_batch"],
        "lr_peak": hyper["lr_peak"],
        "warmup_epochs": hyper["warmup_epochs"],
        "schedule": study["schedule"],
        "epochs": hyper["epochs"],
        "max_steps": study["max_steps"],
        "evaluation": study["evaluation"],
        "micro_batch": study["micro_batch"],
        "device": study["device"],
        "precision": study["precision"],
        "channels_last": study["channels_last"],
        "divergence_factor": study["divergence_factor"],
        "checkpoint_seconds": study["checkpoint_seconds"],
        # the analysis window changes no trace, so it stays out of the run (and its hash); so does tuned_trials,
        # which only says whether the tuned strategy's trial runs trace the noise scale (below)
        "noise_scale": {k: v for k, v in study["noise_scale"].items() if k not in ("window", "tuned_trials")},
    }
    if study.get("warmup_steps") is not None:  # a warm-up in steps replaces the one in epochs
        run["warmup_epochs"] = 0
        if key.strategy in study["warmup_strategies"]:
            run["warmup_steps"] = int(study["warmup_steps"])  # only when set: other runs keep their config hash
    if key.trial is not None:
        run.update(trial_settings(study, key.trial, run))
        if not study["noise_scale"].get("tuned_trials", False):
            run["noise_scale"]["enabled"] = False
    return run


def trial_settings(study: dict, trial: int, run: dict) -> dict:
    """What a trial of `tuned` changes in its run config: its learning rate (eta0 = lr_peak = the trial's
    lr), and momentum and schedule where the search covers them; recorded as `trial` and `trial_hyper`.

    A round-2 trial's rate is not known before round 1 has trained, so its config names where to read it
    (`refine`: ROUND1_PATH and the exponent of the trial in the refined range) and carries no rate; the
    train command resolves it (`resolve_refinement`) just before training, and the trace records the
    resolved config, so its hash covers the rate actually used."""
    first_round = study_trials(study)
    first = len(first_round)
    if trial >= first:
        refine = refine_settings(study["tuning"]["refine"])
        exponents = refinement_exponents(refine)
        lrs = [point["lr"] for point in first_round]
        block = {"round1": ROUND1_PATH.format(study=run["study"]), "factor": refine["factor"],
                 "exponent": exponents[trial - first]}
        if refine["extend_at_edge"]:
            # where the trial sits if round 1's best is an edge of its range: the range then extends past it
            block["edge_exponent"] = 2.0 * (trial - first + 1) / len(exponents)
            block["first_round_range"] = [min(lrs), max(lrs)]
        return {"trial": int(trial), "eta0": None, "lr_peak": None, "refine": block}
    point = next(t for t in study_trials(study) if t["trial"] == trial)
    return point_settings(point, run)


def point_settings(point: dict, run: dict) -> dict:
    """The run-config changes of one search point {trial, lr, [momentum, beta2, schedule]}."""
    trial = point["trial"]
    hyper = {name: value for name, value in point.items() if name not in ("trial", "round")}
    settings = {"trial": int(trial), "trial_hyper": hyper, "eta0": hyper["lr"], "lr_peak": hyper["lr"]}
    for name in ("momentum", "beta2"):  # beta2 is searched for AdamW only, momentum for SGD only
        if name in hyper:
            settings["optimizer"] = {**settings.get("optimizer", run["optimizer"]), name: hyper[name]}
    if "schedule" in hyper:
        settings["schedule"] = {**run["schedule"], "name": hyper["schedule"]}
    return settings


def refinement_placement(refine: dict, best_lr: float) -> tuple[str, float]:
    """Where round 2 searches: ("interior", e) on the even grid around round 1's best rate; or, when that
    best is the highest (lowest) rate round 1 tried, ("extend_high", e) ("extend_low", -e): every round-2
    trial past the edge, up to factor^2 beyond it, so an optimum outside round 1's range is bracketed."""
    low, high = refine.get("first_round_range", (None, None))
    if "edge_exponent" in refine and high is not None and best_lr >= high * (1 - 1e-12):
        return "extend_high", refine["edge_exponent"]
    if "edge_exponent" in refine and low is not None and best_lr <= low * (1 + 1e-12):
        return "extend_low", -refine["edge_exponent"]
    return "interior", refine["exponent"]


def resolve_refinement(run: dict, round1: dict) -> dict:
    """A round-2 run's config with its rate filled in from round 1's result (the contents of ROUND1_PATH):
    lr = best lr at the run's batch size · factor^exponent (refinement_placement: around the best, or past
    the edge of round 1's range when the best is there), the best trial's other searched hyperparameters
    kept. A run without `refine` is returned unchanged."""
    if "refine" not in run:
        return run
    refine = run["refine"]
    best = round1["best"][str(run["batch_size"])]
    point = {name: value for name, value in best.items() if name in ("lr", "momentum", "beta2", "schedule")}
    placement, exponent = refinement_placement(refine, float(best["lr"]))
    point["lr"] = refinement_lr(best["lr"], refine["factor"], exponent)
    point["trial"] = run["trial"]
    base = {k: v for k, v in run.items() if k != "refine"}
    resolved = {**base, **point_settings(point, base)}
    resolved["refine_center"] = {"lr": float(best["lr"]), "trial": int(best["trial"]), "placement": placement}
    return resolved


def resolve_run(run: dict, root: str | Path = ".") -> dict:
    """`resolve_refinement` with round 1's file read from disk (FileNotFoundError when it is missing)."""
    if "refine" not in run:
        return run
    return resolve_refinement(run, json.loads((Path(root) / run["refine"]["round1"]).read_text()))


def config_hash(run: dict) -> str:
    """Stable hash of a resolved run config (sorted-key JSON)."""
    # checkpoint_seconds changes how often state is saved, never the result
    relevant = {k: v for k, v in run.items() if k != "checkpoint_seconds"}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
