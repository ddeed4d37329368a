"""Resolving a config without building anything: the schema with its defaults, `defaults:` merged into each
study, batch sizes expanded, and every check that needs no data or model (cross-key constraints, the
strategies against the optimizer, comparisons against their studies). `batchscale.validate` adds the checks
that build datasets and models.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import jsonschema

from batchscale.errors import ConfigError, ScalingRuleError
from batchscale.spec import strategies as scaling
from batchscale.spec.optimizers import OPTIMIZER_KEYS
from batchscale.spec.predict import check_predict
from batchscale.spec.manifest import RESERVED_NAMES
from batchscale.spec.reading import check_plain_keys, non_finite_key, read_yaml
from batchscale.spec.schema import first_error, load_schema, validator_with_defaults
from batchscale.spec.search import refine_settings, search_dimensions
from batchscale.spec.strategies import STRATEGIES, TUNED
from batchscale.spec.runs import study_trials

REQUIRED_STUDY_KEYS = ("dataset.name", "model.name", "eta0", "base_batch", "epochs", "batch_sizes")


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge `override` into a copy of `base` (dicts merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def is_power_of_two(value: int) -> bool:
    return value >= 1 and (value & (value - 1)) == 0


def batch_size_list(spec, key: str) -> list[int]:
    """Expand `batch_sizes` (list, or {min, max} powers of two) into a sorted list."""
    if isinstance(spec, list):
        return sorted(int(b) for b in spec)
    low, high = int(spec["min"]), int(spec["max"])
    for name, value in (("min", low), ("max", high)):
        if not is_power_of_two(value):
            raise ConfigError(f"config key {key}.{name}: {value} is not a power of two (use an explicit list for other sizes)")
    if low > high:
        raise ConfigError(f"config key {key}: min ({low}) is larger than max ({high})")
    return [2**k for k in range(int(math.log2(low)), int(math.log2(high)) + 1)]


def _get(mapping: dict, dotted: str):
    node = mapping
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _check_study(name: str, study: dict, config: dict) -> None:
    prefix = f"studies.{name}"
    for dotted in REQUIRED_STUDY_KEYS:
        if _get(study, dotted) is None:
            raise ConfigError(f"config key {prefix}.{dotted}: missing (set it in the study or under `defaults`)")
    sizes = batch_size_list(study["batch_sizes"], f"{prefix}.batch_sizes")
    study["batch_sizes"] = sizes
    if len(sizes) < 2:
        # speedups, contours and the critical-batch fit all compare batch sizes: one cannot be drawn
        raise ConfigError(f"config key {prefix}.batch_sizes: {sizes} has one batch size; a study needs at least 2 "
                          f"(speedups and figures compare batch sizes)")
    micro = study.get("micro_batch")
    if micro is not None:
        if micro > max(sizes):
            raise ConfigError(
                f"config key {prefix}.micro_batch: {micro} is larger than the largest batch size {max(sizes)}; "
                f"use a micro_batch <= {max(sizes)} or null")
        for size in sizes:
            if size > micro and size % micro:
                raise ConfigError(
                    f"config key {prefix}.micro_batch: {micro} does not divide batch size {size}; "
                    f"micro-batches must split every larger batch evenly")
    if study["base_batch"] not in sizes:
        raise ConfigError(
            f"config key {prefix}.base_batch: {study['base_batch']} is not one of the batch sizes {sizes}")
    _check_noise_and_branching(prefix, study)
    warmed = [s for s in study["strategies"] if s in study["warmup_strategies"]]
    if warmed and study.get("warmup_steps") is None and study["warmup_epochs"] > study["epochs"]:
        # only a strategy that warms up cares (the default warms up lsr alone)
        raise ConfigError(
            f"config key {prefix}.warmup_epochs: {study['warmup_epochs']} is longer than the {study['epochs']} "
            f"epochs of training (strategies {', '.join(warmed)} warm up); allowed: at most {study['epochs']}")
    if TUNED in study["strategies"]:
        if study["strategies"] == [TUNED]:
            # the study figures (contours, speedup, accuracy) draw the fixed rules' cube; tuned has its own
            fixed = ", ".join(name for name in STRATEGIES if name != TUNED)
            raise ConfigError(f"config key {prefix}.strategies: ['tuned'] alone is not supported; add at least "
                              f"one fixed rule beside it (allowed: {fixed})")
        _check_tuning(prefix, study)
    check_predict(prefix, study, _tuned_trials(study))


def _tuned_trials(study: dict) -> int:
    """Runs of the tuned search per seed and batch size (both rounds); 0 without tuned."""
    if TUNED not in study["strategies"]:
        return 0
    refine = refine_settings(study["tuning"].get("refine"))
    return int(study["tuning"].get("trials", 0)) + (refine["trials"] - refine["trials"] % 2 if refine else 0)


def _check_tuning(prefix: str, study: dict) -> None:
    """The `tuning` block of a study that runs `tuned`: ranges ordered, and only what the workflow runs."""
    tuning = study["tuning"]
    for key in ("lr", "one_minus_momentum", "one_minus_beta2"):
        bounds = tuning.get(key)
        if bounds is not None and bounds["min"] > bounds["max"]:
            raise ConfigError(f"config key {prefix}.tuning.{key}: min ({bounds['min']:g}) is larger than max "
                              f"({bounds['max']:g}); allowed: min <= max")
    try:
        refine_settings(tuning.get("refine"))
    except ValueError as err:
        raise ConfigError(f"config key {prefix}.{err}") from None
    searched = {"one_minus_momentum": "sgd", "one_minus_beta2": "adamw"}
    for key, optimizer in searched.items():
        if tuning.get(key) is not None and study["optimizer"].get("name", "sgd") != optimizer:
            raise ConfigError(f"config key {prefix}.tuning.{key}: searched only with optimizer {optimizer}, and "
                              f"this study uses {study['optimizer'].get('name', 'sgd')}; allowed value: null")
    search_dimensions(tuning)  # the last word on the search space (raises nothing once the above hold)


def _check_optimizer_keys(name: str, given: dict) -> None:
    """A key the chosen optimizer does not read (momentum for adamw, betas for sgd) is a mistake, not a no-op."""
    optimizer = given.get("name", "sgd")
    if optimizer not in OPTIMIZER_KEYS:
        return  # the schema names the allowed values
    unread = sorted(set(given) - set(OPTIMIZER_KEYS[optimizer]) - {"name"})
    if unread:
        raise ConfigError(f"config key studies.{name}.optimizer: {', '.join(unread)} not read by optimizer "
                          f"{optimizer!r}; {optimizer} reads {', '.join(OPTIMIZER_KEYS[optimizer])}")


def _check_scaling_rules(name: str, study: dict) -> None:
    """Every strategy must apply to the optimizer and to every batch size (adam_srsr's betas stay positive)."""
    for strategy in study["strategies"]:
        try:
            scaling.check_strategy(strategy, study["optimizer"]["name"])
        except ScalingRuleError as err:
            raise ConfigError(f"config key studies.{name}.strategies: {err}") from None
    for strategy in study["strategies"]:
        for batch_size in study["batch_sizes"]:
            try:
                scaling.study_hyperparameters(study, strategy, batch_size)
            except ScalingRuleError as err:
                raise ConfigError(f"config key studies.{name}.batch_sizes: {err}") from None


def _check_noise_and_branching(prefix: str, study: dict) -> None:
    noise = study["noise_scale"]
    subset = study["evaluation"]["train_subset"]
    if noise["batch_big"] != "auto" and noise["batch_small"] >= noise["batch_big"]:
        raise ConfigError(f"config key {prefix}.noise_scale.batch_small: {noise['batch_small']} must be smaller "
                          f"than batch_big ({noise['batch_big']})")
    if noise["enabled"] and noise["batch_small"] >= subset:
        raise ConfigError(f"config key {prefix}.noise_scale.batch_small: {noise['batch_small']} must be smaller "
                          f"than the evaluation subset (evaluation.train_subset {subset})")
    branching = study["branching"]
    if branching["enabled"] and 1 not in branching["k"]:
        raise ConfigError(f"config key {prefix}.branching.k: {branching['k']} must contain 1 (the reference branch)")
    if branching["enabled"] and branching["strategy"] not in STRATEGIES:
        raise ConfigError(f"config key {prefix}.branching.strategy: {branching['strategy']!r} is not allowed; "
                          f"allowed values: {', '.join(STRATEGIES)}")


def _loaded(source) -> dict:
    """The config as loaded (a path is read as strict YAML), with plain keys and finite numbers."""
    if isinstance(source, (str, Path)):
        raw = read_yaml(source)
        raw = {} if raw is None else raw
    else:
        raw = copy.deepcopy(source)
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping with a `studies` key")
    check_plain_keys(raw)
    non_finite = non_finite_key(raw)
    if non_finite:
        raise ConfigError(f"config key {non_finite[0] or '(top level)'}: {non_finite[1]!r} is not allowed; "
                          f"every number must be finite")
    return raw


def _check_comparisons(comparisons: dict, studies: dict) -> None:
    """Every comparison names defined studies, one label each, and a strategy all of them run."""
    for group, spec in comparisons.items():
        for study_name in spec["studies"]:
            if study_name not in studies:
                raise ConfigError(
                    f"config key comparisons.{group}.studies: unknown study {study_name!r}; "
                    f"defined studies: {', '.join(sorted(studies))}")
        if "labels" in spec and len(spec["labels"]) != len(spec["studies"]):
            raise ConfigError(f"config key comparisons.{group}.labels: needs one label per study ({len(spec['studies'])})")
        shared = [s for s in STRATEGIES if all(s in studies[n]["strategies"] for n in spec["studies"])]
        for study_name in spec["studies"]:
            if spec["strategy"] not in studies[study_name]["strategies"]:
                raise ConfigError(
                    f"config key comparisons.{group}.strategy: {spec['strategy']!r} is not run by study "
                    f"{study_name!r}; allowed values: the strategies every study of the group runs "
                    f"({', '.join(shared) or 'none'})")


def _check_names(studies: dict, comparisons: dict) -> None:
    """Study names become folders of results/ and parts of rule names: none may take a reserved entry of
    results/, and no two may give the same rule name (Snakemake names a rule with `\\W` replaced by `_`)."""
    seen = {}
    for name in studies:
        if name in RESERVED_NAMES or name.startswith("summary"):
            raise ConfigError(f"config key studies.{name}: the name is taken by an output of results/ "
                              f"({', '.join(RESERVED_NAMES)}, summary*); choose another")
        rule_name = re.sub(r"\W", "_", name)
        if rule_name in seen:
            raise ConfigError(f"config key studies.{name}: gives the same job names as study {seen[rule_name]!r} "
                              f"(Snakemake turns '.' and '-' into '_'); rename one of them")
        seen[rule_name] = name
    by_rule = {}
    for name in comparisons:
        other = by_rule.setdefault(re.sub(r"\W", "_", name), name)
        if other != name:
            raise ConfigError(f"config key comparisons.{name}: gives the same job names as comparison {other!r}; "
                              f"rename one of them")


def _check_given_keys(name: str, given: dict, merged: dict) -> None:
    """Keys the study set itself that its strategies would ignore are mistakes, not no-ops."""
    if "tuning" in given and TUNED not in merged.get("strategies", []):
        raise ConfigError(f"config key studies.{name}.tuning: set, but the study does not run the tuned strategy "
                          f"(strategies: {', '.join(merged.get('strategies', []))}); add tuned or drop the block")


def study_run_count(study: dict) -> int:
    """Runs of a resolved study, counted without listing them (strategies x batch sizes x seeds, the tuned
    search's trials of both rounds instead of one run per seed)."""
    # an even grid of round-2 points around the centre, the centre itself (an odd count) already run in round 1
    trials = _tuned_trials(study)
    per_seed = sum(trials if strategy == TUNED else 1 for strategy in study["strategies"])
    return per_seed * len(study["batch_sizes"]) * len(study["seeds"])


def _check_limits(config: dict) -> None:
    """The sizes that need no data: runs, branching jobs and bootstrap refits (see `limits` in the schema)."""
    limits = config["limits"]
    runs = sum(study_run_count(study) for study in config["studies"].values())
    if runs > limits["max_runs"]:
        largest = max(config["studies"], key=lambda n: study_run_count(config["studies"][n]))
        raise ConfigError(f"config key limits.max_runs: the config asks for {runs:,} training runs (study "
                          f"{largest!r}: {study_run_count(config['studies'][largest]):,}), more than "
                          f"{limits['max_runs']:,}; shrink the grid or raise limits.max_runs")
    jobs = sum(s["branching"]["checkpoints"] for s in config["studies"].values() if s["branching"]["enabled"])
    if jobs > limits["max_branch_jobs"]:
        raise ConfigError(f"config key limits.max_branch_jobs: branching asks for {jobs:,} checkpoint jobs, more "
                          f"than {limits['max_branch_jobs']:,}; lower branching.checkpoints or raise the limit")
    for name, study in config["studies"].items():
        fits = (study["bootstrap"]["samples"] * len(study["batch_sizes"]) * len(study["strategies"])
                * len(study["metrics"]))
        if fits > limits["max_bootstrap_fits"]:
            raise ConfigError(f"config key studies.{name}.bootstrap.samples: {study['bootstrap']['samples']:,} "
                              f"resamples make {fits:,} refits, more than limits.max_bootstrap_fits "
                              f"({limits['max_bootstrap_fits']:,}); lower the samples or raise the limit")


def _check_branching(prefix: str, study: dict) -> None:
    branching = study["branching"]
    if branching["enabled"] and branching["strategy"] == TUNED:
        fixed = ", ".join(name for name in STRATEGIES if name != TUNED)
        raise ConfigError(f"config key {prefix}.branching.strategy: 'tuned' has no single learning rate to branch "
                          f"from; allowed values: {fixed}")
    if branching["enabled"] and branching["strategy"] not in study["strategies"]:
        raise ConfigError(f"config key {prefix}.branching.strategy: {branching['strategy']!r} is not run by the "
                          f"study; allowed values: {', '.join(s for s in study['strategies'] if s != TUNED)}")


def resolve_config(source) -> dict:
    """A config (a path or an already-loaded dict) checked and resolved, without building anything.

    Returns:
      The config with each study fully resolved: `defaults` merged in, every default filled,
      `batch_sizes` expanded to a sorted list, the tuned search's first-round points drawn
      (`tuning.trial_points`).
    """
    raw = _loaded(source)
    schema = load_schema()
    # First pass: structure and types of what the user wrote (no defaults yet, so a typo is caught).
    first_error(jsonschema.Draft202012Validator(schema), raw, "")
    study_schema = {"$defs": schema["$defs"], **schema["$defs"]["study_partial"]}
    resolved = copy.deepcopy(raw)
    first_error(validator_with_defaults(schema), resolved, "")
    shared = raw.get("defaults", {}) or {}
    studies = {}
    for name, study in raw["studies"].items():
        merged = deep_merge(shared, study or {})
        _check_given_keys(name, study or {}, merged)
        _check_optimizer_keys(name, merged.get("optimizer") or {})
        first_error(validator_with_defaults(study_schema), merged, f"studies.{name}")
        _check_study(name, merged, resolved)
        _check_branching(f"studies.{name}", merged)
        _check_scaling_rules(name, merged)
        studies[name] = merged
    resolved["studies"] = studies
    _check_names(studies, resolved.get("comparisons", {}))
    _check_comparisons(resolved.get("comparisons", {}), studies)
    _check_limits(resolved)
    for study in studies.values():
        if TUNED in study["strategies"]:  # drawn once here, so a parse never needs the Sobol sampler again
            study["tuning"]["trial_points"] = study_trials(study)
    return resolved


def has_theory(study: dict) -> bool:
    """Whether the least-squares theory describes a study.

    The theory is exact for noise-free targets; with noise it still gives λ₁, β and the stability limit.

    Args:
      study: the resolved study config.

    Returns:
      True for a linear model on `least_squares` data.
    """
    return study["dataset"]["name"] == "least_squares" and study["model"]["name"] == "linear"
