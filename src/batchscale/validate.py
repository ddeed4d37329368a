"""The whole check of a config before any job starts: batchscale.spec's resolution, then what needs the data
and the models: names and options of datasets and models, real data present, every batch size within the
training split, every model able to take its data (built on PyTorch's meta device, no memory used).

The only code that builds things at parse time; `jobs.config_cache` keeps its result per config and code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from batchscale.data import DataSpec, check_dataset, load_dataset, resolve_dataset
from batchscale.errors import ConfigError, DataMissingError
from batchscale.models import build_model, check_model
from batchscale.models.flops import example_input
from batchscale.spec.strategies import TUNED, study_hyperparameters
from batchscale.spec.studies import resolve_config

FLOAT_COPIES_PER_PARAMETER = 5  # weights, gradient, momentum (Adam: two moments), last finite weights


@dataclass(frozen=True)
class DataShape:
    """What validation and the cost plan need to know about a study's data: the model's spec and the split
    sizes after `fraction`, `max_examples` and `max_test_examples`."""

    spec: DataSpec
    n_train: int
    n_test: int
    source: str  # "published sizes" (the dataset registered its sizes) or "built"


_DATA_SHAPES: dict[str, DataShape] = {}


def _capped(dataset: dict, n_train: int, n_test: int, equal_classes: int | None = None) -> tuple[int, int]:
    """Sizes after `fraction` (stratified: rounded per class where the classes are known to be equal) and caps."""
    fraction = dataset.get("fraction", 1.0)
    if fraction < 1.0 and equal_classes:
        n_train = equal_classes * max(1, int(round(fraction * n_train / equal_classes)))
    elif fraction < 1.0:
        n_train = max(1, int(round(fraction * n_train)))
    if dataset.get("max_examples") is not None:
        n_train = min(n_train, dataset["max_examples"])
    if dataset.get("max_test_examples") is not None:
        n_test = min(n_test, dataset["max_test_examples"])
    return n_train, n_test


def data_shape(dataset: dict, data_root: str = "data", download: bool = False) -> DataShape:
    """A study's data spec and split sizes: real datasets from their published sizes (no file read),
    embedded and custom ones built (well under a second for the shipped sizes). Cached per dataset config."""
    key = json.dumps([dataset, data_root], sort_keys=True)
    if key not in _DATA_SHAPES:
        entry = resolve_dataset(dataset["name"])
        if entry.shape is not None:
            spec, n_train, n_test, *equal = entry.shape(dataset.get("options", {}))
            _DATA_SHAPES[key] = DataShape(spec, *_capped(dataset, n_train, n_test, *equal), "published sizes")
        else:
            splits = load_dataset(dataset, data_root, download)
            _DATA_SHAPES[key] = DataShape(splits.spec, splits.num_train, int(splits.test_x.shape[0]), "built")
    return _DATA_SHAPES[key]


def one_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def expected_output(spec: DataSpec) -> tuple:
    """The output shape of a model on a batch of 2 (README: what a model maps a batch to)."""
    if spec.task == "language_model":
        return (2, spec.input_shape[0], spec.num_classes)
    if spec.task == "segmentation":
        return (2, spec.num_classes, *spec.input_shape[1:])
    return (2, spec.num_classes)


def _output_on(device: str, model: dict, spec: DataSpec):
    with torch.device(device), torch.no_grad():
        return build_model(model, spec)(example_input(spec, batch=2, device=device))


def check_model_builds(name: str, model: dict, spec: DataSpec) -> None:
    """Build the model and run a batch of 2 through it, on the meta device (no memory, no arithmetic) where it
    can: a model that cannot take this data (an LSTM on images, a tied LSTM of unequal sizes) is refused now,
    not inside a job. A model whose forward needs values (`.item()`, branching on its input) or a layer
    without a meta kernel is tried on the CPU instead (such a model trains run by run, not vectorised)."""
    try:
        try:
            output = _output_on("meta", model, spec)
        except (NotImplementedError, RuntimeError):  # data-dependent control flow: try with real values
            output = _output_on("cpu", model, spec)
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError, NotImplementedError) as err:
        raise ConfigError(f"config key studies.{name}.model: {model['name']!r} cannot be built for dataset "
                          f"of task {spec.task} and input shape {tuple(spec.input_shape)} ({one_line(err)})") from None
    expected = expected_output(spec)
    if tuple(getattr(output, "shape", ())) != expected:
        raise ConfigError(f"config key studies.{name}.model: {model['name']!r} maps a batch of 2 examples of shape "
                          f"{tuple(spec.input_shape)} to {tuple(getattr(output, 'shape', ()))}; a {spec.task} "
                          f"dataset needs {expected}")


def check_data_fits(config: dict) -> None:
    """Every batch size must fit in the training split (a step uses exactly m examples), and the model must
    take the data."""
    for name, study in config["studies"].items():
        try:
            shape = data_shape(study["dataset"], config["data_root"], config["download"])
        except ConfigError:
            raise
        except (ValueError, TypeError, RuntimeError) as err:
            raise ConfigError(f"config key studies.{name}.dataset: cannot build the dataset ({one_line(err)})") from None
        largest = max(study["batch_sizes"])
        if largest > shape.n_train:
            raise ConfigError(
                f"config key studies.{name}.batch_sizes: {largest} is larger than the {shape.n_train} training "
                f"examples left after fraction, max_examples and the test split; allowed: batch sizes <= {shape.n_train}")
        check_model_builds(name, study["model"], shape.spec)


def check_registries(config: dict, check_data: bool = True) -> None:
    """Dataset and model names must resolve, and real data must be present, before any job starts."""
    for name, study in config["studies"].items():
        try:
            check_dataset(study["dataset"], config["data_root"], config["download"], f"studies.{name}.dataset")
        except DataMissingError:
            if check_data:
                raise
        check_model(study["model"], f"studies.{name}.model")


def largest_pack(study: dict) -> int:
    """Runs of the study's largest pack (jobs.packs groups seeds by s // seeds_per_pack, trials likewise)."""
    blocks: dict[int, int] = {}
    for seed in study["seeds"]:
        blocks[seed // study["pack"]["seeds_per_pack"]] = blocks.get(seed // study["pack"]["seeds_per_pack"], 0) + 1
    trials = len(study["tuning"].get("trial_points") or []) if TUNED in study["strategies"] else 1
    fixed = len([s for s in study["strategies"] if s != TUNED]) if study["pack"]["strategies"] == "together" else 1
    return max(blocks.values()) * max(1, min(trials, study["pack"]["trials_per_pack"]), fixed)


def check_costs(config: dict) -> None:
    """Steps per run and memory per pack against `limits`, and warm-ups within their runs."""
    limits = config["limits"]
    for name, study in config["studies"].items():
        shape = data_shape(study["dataset"], config["data_root"], config["download"])
        for strategy in study["strategies"]:
            for m in (min(study["batch_sizes"]), max(study["batch_sizes"])):
                steps = (shape.n_train // m) * study_hyperparameters(study, strategy, m)["epochs"]
                steps = min(steps, study["max_steps"] or steps)
                if steps > limits["max_steps_per_run"]:
                    raise ConfigError(f"config key studies.{name}.epochs: a {strategy} run at batch size {m} would "
                                      f"take {steps:,} steps, more than limits.max_steps_per_run "
                                      f"({limits['max_steps_per_run']:,}); lower epochs or set max_steps")
                warmup = study["warmup_steps"] if strategy in study["warmup_strategies"] else None
                if warmup is not None and warmup > steps:
                    raise ConfigError(f"config key studies.{name}.warmup_steps: {warmup} is longer than the {steps} "
                                      f"steps of a {strategy} run at batch size {m}; allowed: at most {steps}")
        with torch.device("meta"):  # parameters are counted without allocating them
            parameters = sum(p.numel() for p in build_model(study["model"], shape.spec).parameters())
        megabytes = parameters * FLOAT_COPIES_PER_PARAMETER * 4 * largest_pack(study) / 2**20
        if megabytes > limits["max_pack_memory_mb"]:
            raise ConfigError(f"config key studies.{name}.model: {parameters:,} parameters x {largest_pack(study)} runs "
                              f"per pack need about {megabytes:,.0f} MB for weights and optimizer state, more than "
                              f"limits.max_pack_memory_mb ({limits['max_pack_memory_mb']:,}); use a smaller model, "
                              f"lower pack.seeds_per_pack / trials_per_pack, or raise the limit")


def check_branching_fits(config: dict) -> None:
    """Every branch batch k x B must fit in the training split."""
    for name, study in config["studies"].items():
        branching = study["branching"]
        if not branching["enabled"]:
            continue
        n = data_shape(study["dataset"], config["data_root"], config["download"]).n_train
        base = branching["batch_size"] or study["base_batch"]
        largest = max(branching["k"]) * base
        if largest > n:
            raise ConfigError(f"config key studies.{name}.branching.k: the largest branch batch {max(branching['k'])} "
                              f"x {base} = {largest} is larger than the {n} training examples; allowed: k x B <= {n}")


def check_comparison_tasks(config: dict) -> None:
    """The studies of a comparison must solve the same kind of task (their curves share axes)."""
    for group, spec in config.get("comparisons", {}).items():
        tasks = {name: data_shape(config["studies"][name]["dataset"], config["data_root"],
                                  config["download"]).spec.task for name in spec["studies"]}
        if len(set(tasks.values())) > 1:
            listed = ", ".join(f"{name} ({task})" for name, task in tasks.items())
            raise ConfigError(f"config key comparisons.{group}.studies: the studies solve different tasks ({listed}); "
                              f"a comparison needs one task")


def load_config(source, check_data: bool = True) -> dict:
    """Validate a config (a path or an already-loaded dict) and return it resolved.

    Args:
      source: a config file's path, or the config as a dict.
      check_data: False skips only the check that real datasets' files exist (`batchscale plan` is for
        users who do not have the data yet); names and options are checked all the same.

    Returns:
      The resolved config (batchscale.spec.studies.resolve_config), every check passed.
    """
    resolved = resolve_config(source)
    check_registries(resolved, check_data)
    check_data_fits(resolved)
    check_costs(resolved)
    check_branching_fits(resolved)
    check_comparison_tasks(resolved)
    for study in resolved["studies"].values():  # what the workflow's plan and progress need, kept with the config
        shape = data_shape(study["dataset"], resolved["data_root"], resolved["download"])
        study["data_sizes"] = {"train": shape.n_train, "test": shape.n_test}
    return resolved
