"""Config loading: JSON-schema validation with defaults, semantic checks, and the grid of runs.

Every error is a `ConfigError` whose message is one line naming the offending key and what is
allowed, so the Snakefile and the CLI can print it and stop before any job starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import jsonschema
import yaml

from batchscale import strategies as scaling
from batchscale.strategies import STRATEGIES, peak_learning_rate, run_epochs  # noqa: F401 (re-exported)

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
TUNED = "tuned"  # the searched strategy: one run per trial (batchscale.search), the others one per seed
REQUIRED_STUDY_KEYS = ("dataset.name", "model.name", "eta0", "base_batch", "epochs", "batch_sizes")


class ConfigError(ValueError):
    """A bad config; the message is one line that names the key."""


class DataMissingError(ConfigError):
    """A real dataset's files are not under data_root (the message names the path and how to get them)."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # an unhashable key: SafeLoader names it itself
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    f"config file {mark.name}, line {mark.line + 1}, column {mark.column + 1}: duplicate key "
                    f"{key!r} (first given on line {seen[key] + 1}); each key may appear once in a mapping")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path):
    """Parse a YAML config file; a syntax error or duplicate key is a ConfigError with line and column."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(part for part in (err.context, err.problem) if part)
        raise ConfigError(f"config file {path}{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML: {str(err).splitlines()[0]}") from None
    finally:
        loader.dispose()


def _non_finite_key(node, path=()):
    """The dotted key of the first NaN or infinite number in a loaded config, or None."""
    if isinstance(node, float) and not math.isfinite(node):
        return ".".join(map(str, path)), node
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return None
    for key, value in items:
        found = _non_finite_key(value, path + (key,))
        if found:
            return found
    return None


def check_plain_keys(node, path=()) -> None:
    """Every mapping key must be a string: YAML reads `1:`, `true:` and `null:` as a number, a bool and None,
    which name no study and no option (and JSON would quietly turn them into strings)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                where = ".".join(map(str, path)) or "top level"
                raise ConfigError(f"config key {where}: key {key!r} is a {type(key).__name__}, not a string; "
                                  f"quote it ('{key}') or rename it (names use letters, digits, '_', '-', '.')")
            check_plain_keys(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            check_plain_keys(value, path + (index,))


def _numeric_string_hint(value) -> str:
    """For a string that reads as a number, how to write it. The validator cannot tell where it came from:
    a YAML file (quoted, or YAML 1.1's `1e-3`) or `snakemake --config 'key={a: 2}'`, which reads the value
    with YAML's BaseLoader and so passes every nested value as a string; the hint covers both."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    command_line = "snakemake --config passes the values inside {...} as strings, so set it in a --configfile"
    mantissa, e, exponent = value.strip().lower().partition("e")
    if e and "." not in mantissa:
        return (f"; {value!r} is read by YAML as a string (a float needs a dot before its exponent): in a YAML "
                f"file write {mantissa}.0e{exponent}; {command_line}")
    return f"; {value!r} is a string: in a YAML file write it without quotes; {command_line}"


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
        return f"config key {key}: expected {wanted}, got {value!r}{_numeric_string_hint(value)}"
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


def first_error(validator, instance, prefix: str) -> None:
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
    if warmed and study["warmup_epochs"] > study["epochs"]:
        # only a strategy that warms up cares (the default warms up lsr alone)
        raise ConfigError(
            f"config key {prefix}.warmup_epochs: {study['warmup_epochs']} is longer than the {study['epochs']} "
            f"epochs of training (strategies {', '.join(warmed)} warm up); allowed: at most {study['epochs']}")
    if TUNED in study["strategies"]:
        if study["strategies"] == [TUNED]:
            # the study figures (contours, speedup, accuracy) draw the fixed rules' cube; tuned has its own
            raise ConfigError(f"config key {prefix}.strategies: ['tuned'] alone is not supported; add at least "
                              f"one fixed rule beside it (allowed: blr, lsr, srsr, longer, adam_srsr)")
        _check_tuning(prefix, study)


def _check_tuning(prefix: str, study: dict) -> None:
    """The `tuning` block of a study that runs `tuned`: ranges ordered, and only what the workflow runs."""
    from batchscale.search import refine_settings, search_dimensions

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
    if optimizer not in scaling.OPTIMIZER_KEYS:
        return  # the schema names the allowed values
    unread = sorted(set(given) - set(scaling.OPTIMIZER_KEYS[optimizer]) - {"name"})
    if unread:
        raise ConfigError(f"config key studies.{name}.optimizer: {', '.join(unread)} not read by optimizer "
                          f"{optimizer!r}; {optimizer} reads {', '.join(scaling.OPTIMIZER_KEYS[optimizer])}")


def _check_scaling_rules(name: str, study: dict) -> None:
    """Every strategy must apply to the optimizer and to every batch size (adam_srsr's betas stay positive)."""
    for strategy in study["strategies"]:
        try:
            scaling.check_strategy(strategy, study["optimizer"]["name"])
        except scaling.ScalingRuleError as err:
            raise ConfigError(f"config key studies.{name}.strategies: {err}") from None
    for strategy in study["strategies"]:
        for batch_size in study["batch_sizes"]:
            try:
                scaling.study_hyperparameters(study, strategy, batch_size)
            except scaling.ScalingRuleError as err:
                raise ConfigError(f"config key studies.{name}.batch_sizes: {err}") from None


def _check_noise_and_branching(prefix: str, study: dict) -> None:
    noise = study["noise_scale"]
    if noise["batch_small"] >= noise["batch_big"]:
        raise ConfigError(f"config key {prefix}.noise_scale.batch_small: {noise['batch_small']} must be smaller "
                          f"than batch_big ({noise['batch_big']})")
    branching = study["branching"]
    if branching["enabled"] and 1 not in branching["k"]:
        raise ConfigError(f"config key {prefix}.branching.k: {branching['k']} must contain 1 (the reference branch)")
    if branching["enabled"] and branching["strategy"] not in STRATEGIES:
        raise ConfigError(f"config key {prefix}.branching.strategy: {branching['strategy']!r} is not allowed; "
                          f"allowed values: {', '.join(STRATEGIES)}")


def load_config(source, check_data: bool = True) -> dict:
    """Validate a config (a path or an already-loaded dict) and return it resolved.

    `check_data=False` skips only the check that real datasets' files exist (`batchscale plan` is for
    users who do not have the data yet); names and options are checked all the same.

    Each study comes back fully resolved: `defaults` merged in, every default filled,
    `batch_sizes` expanded to a sorted list.
    """
    if isinstance(source, (str, Path)):
        raw = read_yaml(source)
        raw = {} if raw is None else raw
    else:
        raw = copy.deepcopy(source)
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping with a `studies` key")
    check_plain_keys(raw)
    non_finite = _non_finite_key(raw)
    if non_finite:
        raise ConfigError(f"config key {non_finite[0] or '(top level)'}: {non_finite[1]!r} is not allowed; "
                          f"every number must be finite")

    schema = load_schema()
    # First pass: structure and types of what the user wrote (no defaults yet, so a typo is caught).
    first_error(jsonschema.Draft202012Validator(schema), raw, "")

    study_schema = {"$defs": schema["$defs"], **schema["$defs"]["study_partial"]}
    resolved = copy.deepcopy(raw)
    first_error(_validator_with_defaults(schema), resolved, "")
    shared = raw.get("defaults", {}) or {}
    studies = {}
    for name, study in raw["studies"].items():
        merged = deep_merge(shared, study or {})
        _check_optimizer_keys(name, merged.get("optimizer") or {})
        first_error(_validator_with_defaults(study_schema), merged, f"studies.{name}")
        _check_study(name, merged, resolved)
        _check_scaling_rules(name, merged)
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
        for study_name in spec["studies"]:
            runs = studies[study_name]["strategies"]
            if spec["strategy"] not in runs:
                raise ConfigError(
                    f"config key comparisons.{group}.strategy: {spec['strategy']!r} is not run by study "
                    f"{study_name!r}; allowed values: the strategies every study of the group runs "
                    f"({', '.join(s for s in STRATEGIES if all(s in studies[n]['strategies'] for n in spec['studies'])) or 'none'})")
    _check_registries(resolved, check_data)
    _check_data_fits(resolved)
    for study in studies.values():
        if TUNED in study["strategies"]:  # drawn once here, so a parse never needs the Sobol sampler again
            study["tuning"]["trial_points"] = study_trials(study)
    return resolved


_DATA_SHAPES: dict[str, object] = {}


def data_shape_of(dataset: dict, data_root: str = "data", download: bool = False):
    """A study's data spec and split sizes after `fraction`, `max_examples` and the test split.

    Real datasets are sized from their published numbers (no files read); embedded and custom ones are
    built, which takes well under a second for the shipped sizes. Cached per dataset config.
    """
    from batchscale.plan import data_shape

    cache_key = json.dumps([dataset, data_root], sort_keys=True)
    if cache_key not in _DATA_SHAPES:
        _DATA_SHAPES[cache_key] = data_shape(dataset, data_root, download)
    return _DATA_SHAPES[cache_key]


def _one_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _check_model_builds(name: str, model: dict, spec) -> None:
    """Build the model on the meta device (no memory, no arithmetic): a model that cannot take this data
    (an LSTM on images, a tied LSTM of unequal sizes) is refused now, not inside a job."""
    import torch

    from batchscale.models import build_model
    from batchscale.models.flops import example_input

    try:
        with torch.device("meta"), torch.no_grad():
            net = build_model(model, spec)
            output = net(example_input(spec, batch=2, device="meta"))
    except ConfigError:
        raise
    except NotImplementedError:  # a custom layer without a meta kernel: it is built in the job
        return
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError) as err:
        raise ConfigError(f"config key studies.{name}.model: {model['name']!r} cannot be built for dataset "
                          f"of task {spec.task} and input shape {tuple(spec.input_shape)} ({_one_line(err)})") from None
    expected = _expected_output(spec)
    if tuple(getattr(output, "shape", ())) != expected:
        raise ConfigError(f"config key studies.{name}.model: {model['name']!r} maps a batch of 2 examples of shape "
                          f"{tuple(spec.input_shape)} to {tuple(getattr(output, 'shape', ()))}; a {spec.task} "
                          f"dataset needs {expected}")


def _expected_output(spec) -> tuple:
    """The output shape of a model on a batch of 2 (README: what a model maps a batch to)."""
    if spec.task == "language_model":
        return (2, spec.input_shape[0], spec.num_classes)
    if spec.task == "segmentation":
        return (2, spec.num_classes, *spec.input_shape[1:])
    return (2, spec.num_classes)


def _check_data_fits(config: dict) -> None:
    """Every batch size must fit in the training split (a step uses exactly m examples), and the model must
    take the data."""
    for name, study in config["studies"].items():
        try:
            shape = data_shape_of(study["dataset"], config["data_root"], config["download"])
        except ConfigError:
            raise
        except (ValueError, TypeError, RuntimeError) as err:
            raise ConfigError(f"config key studies.{name}.dataset: cannot build the dataset ({_one_line(err)})") from None
        largest = max(study["batch_sizes"])
        if largest > shape.n_train:
            raise ConfigError(
                f"config key studies.{name}.batch_sizes: {largest} is larger than the {shape.n_train} training "
                f"examples left after fraction, max_examples and the test split; allowed: batch sizes <= {shape.n_train}")
        _check_model_builds(name, study["model"], shape.spec)


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


# Where a run's trace lives: the one place this template is written (the train rule, the cube's inputs and
# the check of a trace against its own path all use it through RunKey). `{trial}` is empty for the fixed
# strategies and TRIAL_PART for a trial of `tuned`: results/s/traces/tuned/bs64/seed2_trial17.h5.
TRACE_PATH = "results/{study}/traces/{strategy}/bs{batch_size}/seed{seed}{trial}.h5"
TRIAL_PART = "_trial{trial}"
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
    from batchscale.search import first_round

    if TUNED not in study["strategies"]:
        return []
    points = study["tuning"].get("trial_points")
    return points if points is not None else first_round(study["tuning"])


# Round 1's best trial per batch size (rule tuning_refine_ranges): the file round-2 runs read their rate from.
ROUND1_PATH = "results/{study}/tuning_round1.json"


def refinement_trials(study: dict) -> list[int]:
    """The trial numbers of the refinement round (K .. K+K2-1); [] without `tuning.refine` or `tuned`."""
    from batchscale.search import refinement_exponents

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
    settings = scaling.optimizer_settings(optimizer)
    if settings.get("name") == "adamw":
        settings.pop("betas")
        settings.update({name: hyper[name] for name in ("beta1", "beta2", "eps", "weight_decay")})
    return settings


def run_config(config: dict, key: RunKey) -> dict:
    """The fully resolved config of one run: everything the engine needs, nothing else."""
    study = config["studies"][key.study]
    hyper = scaling.study_hyperparameters(study, key.strategy, key.batch_size)
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
        # the analysis window changes no trace, so it stays out of the run (and its hash)
        "noise_scale": {k: v for k, v in study["noise_scale"].items() if k != "window"},
    }
    if key.trial is not None:
        run.update(trial_settings(study, key.trial, run))
    return run


def trial_settings(study: dict, trial: int, run: dict) -> dict:
    """What a trial of `tuned` changes in its run config: its learning rate (eta0 = lr_peak = the trial's
    lr), and momentum and schedule where the search covers them; recorded as `trial` and `trial_hyper`.

    A round-2 trial's rate is not known before round 1 has trained, so its config names where to read it
    (`refine`: ROUND1_PATH and the exponent of the trial in the refined range) and carries no rate; the
    train command resolves it (`resolve_refinement`) just before training, and the trace records the
    resolved config, so its hash covers the rate actually used."""
    from batchscale.search import refine_settings, refinement_exponents

    first = len(study_trials(study))
    if trial >= first:
        refine = study["tuning"]["refine"]
        return {"trial": int(trial), "eta0": None, "lr_peak": None,
                "refine": {"round1": ROUND1_PATH.format(study=run["study"]),
                           "factor": refine_settings(refine)["factor"],
                           "exponent": refinement_exponents(refine)[trial - first]}}
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


def resolve_refinement(run: dict, round1: dict) -> dict:
    """A round-2 run's config with its rate filled in from round 1's result (the contents of ROUND1_PATH):
    lr = best lr at the run's batch size · factor^exponent, the best trial's other searched
    hyperparameters kept. A run without `refine` is returned unchanged."""
    from batchscale.search import refinement_lr

    if "refine" not in run:
        return run
    refine = run["refine"]
    best = round1["best"][str(run["batch_size"])]
    point = {name: value for name, value in best.items() if name in ("lr", "momentum", "beta2", "schedule")}
    point["lr"] = refinement_lr(best["lr"], refine["factor"], refine["exponent"])
    point["trial"] = run["trial"]
    base = {k: v for k, v in run.items() if k != "refine"}
    resolved = {**base, **point_settings(point, base)}
    resolved["refine_center"] = {"lr": float(best["lr"]), "trial": int(best["trial"])}
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
