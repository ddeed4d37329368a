"""Config loading: JSON-schema validation with defaults, semantic checks, and the grid of runs.

Every error is a `ConfigError` whose message is one line naming the offending key and what is
allowed, so the Snakefile and the CLI can print it and stop before any job starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
STRATEGIES = ("blr", "lsr", "srsr", "longer")
REQUIRED_STUDY_KEYS = ("dataset.name", "model.name", "eta0", "base_batch", "epochs", "batch_sizes")


class ConfigError(ValueError):
    """A bad config; the message is one line that names the key."""


class DataMissingError(ConfigError):
    """A real dataset's files are not under data_root (the message names the path and how to get them)."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


def _validator_with_defaults(schema: dict):
    """A Draft 2020-12 validator that also fills `default` values into the instance."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop_schema in properties.items():
                if "default" in prop_schema and name not in instance:
                    instance[name] = copy.deepcopy(prop_schema["default"])
        yield from validate_properties(validator, properties, instance, subschema)

    extended = jsonschema.validators.extend(base, {"properties": properties_with_defaults})
    return extended(schema)


def _key_path(prefix: str, path) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in path]
    return ".".join(parts) or "(top level)"


def _describe(error: jsonschema.ValidationError, prefix: str) -> str:
    """One line: which key, what is wrong, what is allowed."""
    key = _key_path(prefix, error.absolute_path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        where = key if key != "(top level)" else "top level"
        names = ", ".join(repr(u) for u in unknown)
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"config key {where}: unknown key {names}{hint}"
    if kind == "enum":
        return f"config key {key}: {value!r} is not allowed; allowed values: {', '.join(map(str, expected))}"
    if kind == "type":
        wanted = expected if isinstance(expected, str) else " or ".join(expected)
        return f"config key {key}: expected {wanted}, got {value!r}"
    if kind == "minimum":
        return f"config key {key}: must be >= {expected}, got {value!r}"
    if kind == "exclusiveMinimum":
        return f"config key {key}: must be > {expected}, got {value!r}"
    if kind == "maximum":
        return f"config key {key}: must be <= {expected}, got {value!r}"
    if kind == "exclusiveMaximum":
        return f"config key {key}: must be < {expected}, got {value!r}"
    if kind == "minItems":
        return f"config key {key}: needs at least {expected} item(s), got {len(value)}"
    if kind == "minProperties":
        return f"config key {key}: needs at least {expected} entry(ies)"
    if kind == "uniqueItems":
        return f"config key {key}: items must be unique, got {value!r}"
    if kind == "required":
        return f"config key {key}: missing required key {error.message.split(chr(39))[1]!r}"
    if kind == "pattern" or kind == "propertyNames":
        return f"config key {key}: name {value!r} must use letters, digits, '_', '-', '.'"
    if kind == "oneOf":
        if key.endswith("batch_sizes"):
            return f"config key {key}: expected a list of positive integers or {{min, max}}, got {value!r}"
        if key.endswith("threshold"):
            return (f"config key {key}: expected lower_quartile_of_largest, {{quantile_of_largest: q}} "
                    f"with 0 < q < 1 or {{fixed: value}} with value > 0, got {value!r}")
        return f"config key {key}: {value!r} matches none of the allowed forms"
    return f"config key {key}: {error.message}"


def _first_error(validator, instance, prefix: str) -> None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # The shallowest error names the key; for a oneOf, _describe lists the allowed forms.
        error = errors[0]
        if error.validator == "oneOf" and error.context and isinstance(error.instance, list):
            # a list was given, so the list form was meant: report what is wrong with it
            list_errors = [e for e in error.context if e.schema_path and e.schema_path[0] == 0]
            if list_errors:
                error = max(list_errors, key=lambda e: len(e.absolute_path))
        raise ConfigError(_describe(error, prefix))


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
    if study["warmup_epochs"] > study["epochs"]:
        raise ConfigError(
            f"config key {prefix}.warmup_epochs: {study['warmup_epochs']} is longer than the {study['epochs']} epochs")


def load_config(source, check_data: bool = True) -> dict:
    """Validate a config (a path or an already-loaded dict) and return it resolved.

    `check_data=False` skips only the check that real datasets' files exist (`batchscale plan` is for
    users who do not have the data yet); names and options are checked all the same.

    Each study comes back fully resolved: `defaults` merged in, every default filled,
    `batch_sizes` expanded to a sorted list.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            with open(path) as handle:
                raw = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    else:
        raw = copy.deepcopy(dict(source))
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping with a `studies` key")

    schema = load_schema()
    # First pass: structure and types of what the user wrote (no defaults yet, so a typo is caught).
    _first_error(jsonschema.Draft202012Validator(schema), raw, "")

    study_schema = {"$defs": schema["$defs"], **schema["$defs"]["study_partial"]}
    resolved = copy.deepcopy(raw)
    _first_error(_validator_with_defaults(schema), resolved, "")
    shared = raw.get("defaults", {}) or {}
    studies = {}
    for name, study in raw["studies"].items():
        merged = deep_merge(shared, study or {})
        _first_error(_validator_with_defaults(study_schema), merged, f"studies.{name}")
        _check_study(name, merged, resolved)
        studies[name] = merged
    resolved["studies"] = studies
    for group, spec in resolved.get("comparisons", {}).items():
        for study_name in spec["studies"]:
            if study_name not in studies:
                raise ConfigError(
                    f"config key comparisons.{group}.studies: unknown study {study_name!r}; "
                    f"defined studies: {', '.join(sorted(studies))}")
        if "labels" in spec and len(spec["labels"]) != len(spec["studies"]):
            raise ConfigError(f"config key comparisons.{group}.labels: needs one label per study ({len(spec['studies'])})")
    _check_registries(resolved, check_data)
    return resolved


def _check_registries(config: dict, check_data: bool = True) -> None:
    """Dataset and model names must resolve, and real data must be present, before any job starts."""
    from batchscale.data import check_dataset
    from batchscale.models import check_model

    for name, study in config["studies"].items():
        try:
            check_dataset(study["dataset"], config["data_root"], config["download"], f"studies.{name}.dataset")
        except DataMissingError:
            if check_data:
                raise
        check_model(study["model"], f"studies.{name}.model")


# --------------------------------------------------------------------------------------------
# The grid of runs


@dataclass(frozen=True)
class RunKey:
    study: str
    strategy: str
    batch_size: int
    seed: int

    @property
    def trace_path(self) -> str:
        return f"results/{self.study}/traces/{self.strategy}/bs{self.batch_size}/seed{self.seed}.h5"


def iter_runs(config: dict) -> Iterator[RunKey]:
    for study_name, study in config["studies"].items():
        for strategy in study["strategies"]:
            for batch_size in study["batch_sizes"]:
                for seed in study["seeds"]:
                    yield RunKey(study_name, strategy, int(batch_size), int(seed))


def peak_learning_rate(strategy: str, eta0: float, batch_size: int, base_batch: int) -> float:
    """The strategy's learning rate for batch size m (before warm-up and schedule)."""
    ratio = batch_size / base_batch
    if strategy in ("blr", "longer"):
        return eta0
    if strategy == "lsr":
        return eta0 * ratio
    if strategy == "srsr":
        return eta0 * math.sqrt(ratio)
    raise ConfigError(f"strategy {strategy!r} is not allowed; allowed values: {', '.join(STRATEGIES)}")


def run_epochs(strategy: str, epochs: int, batch_size: int, base_batch: int, max_factor: float) -> int:
    """Epochs for one run: `longer` trains m/m0 times more epochs (Hoffer et al.), capped."""
    if strategy != "longer":
        return int(epochs)
    factor = min(max(batch_size / base_batch, 1.0), max_factor)
    return int(round(epochs * factor))


def run_config(config: dict, key: RunKey) -> dict:
    """The fully resolved config of one run: everything the engine needs, nothing else."""
    study = config["studies"][key.study]
    return {
        "study": key.study,
        "strategy": key.strategy,
        "batch_size": key.batch_size,
        "seed": key.seed,
        "dataset": study["dataset"],
        "data_root": config["data_root"],
        "download": config["download"],
        "model": study["model"],
        "optimizer": study["optimizer"],
        "eta0": study["eta0"],
        "base_batch": study["base_batch"],
        "lr_peak": peak_learning_rate(key.strategy, study["eta0"], key.batch_size, study["base_batch"]),
        "warmup_epochs": study["warmup_epochs"] if key.strategy in study["warmup_strategies"] else 0,
        "schedule": study["schedule"],
        "epochs": run_epochs(key.strategy, study["epochs"], key.batch_size, study["base_batch"], study["longer_max_factor"]),
        "max_steps": study["max_steps"],
        "evaluation": study["evaluation"],
        "micro_batch": study["micro_batch"],
        "device": study["device"],
        "precision": study["precision"],
        "channels_last": study["channels_last"],
        "divergence_factor": study["divergence_factor"],
        "checkpoint_seconds": study["checkpoint_seconds"],
    }


def config_hash(run: dict) -> str:
    """Stable hash of a resolved run config (sorted-key JSON)."""
    # checkpoint_seconds changes how often state is saved, never the result
    relevant = {k: v for k, v in run.items() if k != "checkpoint_seconds"}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
