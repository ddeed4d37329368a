"""Configs that cannot run are refused before any job, in one line naming the key, the value and what is allowed.

The table here adds to tests/test_config.py's BAD_CONFIGS; together they are checked through `load_config`
(what `batchscale validate`, `batchscale plan` and the Snakefile share), a sample through the `validate` CLI,
bad YAML files through the CLI, and one case of each category through `snakemake -n` (a dry run costs
seconds, so one per category, not all).
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from batchscale.errors import ConfigError
from batchscale.validate import load_config
from conftest import copy_workflow, snakemake, tiny_config, write_config
from test_config import BAD_CONFIGS as BASIC_CASES
from test_config import DELETE, _study


def _with_comparison(strategy: str | None = "lsr", **second):
    config = tiny_config()
    config["studies"]["other"] = dict(copy.deepcopy(config["studies"]["tiny"]), **second)
    spec = {"studies": ["tiny", "other"]}
    if strategy:
        spec["strategy"] = strategy
    config["comparisons"] = {"g": spec}
    return config


def _tuned_comparison(**second):
    """Two studies that both run `tuned` (the second with `second`), compared on it."""
    config = _with_comparison("tuned", **second)
    config["studies"]["tiny"]["strategies"] = ["blr", "tuned"]
    return config


def _model(name, **options):
    return {"name": name, "options": options}


NAN, INF = float("nan"), float("inf")
TOO_BIG_SEED = 2**64

# (category, case id, config, substrings the one-line message must contain)
CASES = [
    # numbers that are not numbers
    ("numbers", "eta0 NaN", _study(eta0=NAN), ["studies.tiny.eta0", "nan", "finite"]),
    ("numbers", "eta0 infinite", _study(eta0=INF), ["studies.tiny.eta0", "inf", "finite"]),
    ("numbers", "fixed threshold NaN", _study(threshold={"fixed": NAN}), ["studies.tiny.threshold.fixed", "finite"]),
    ("numbers", "momentum NaN", _study(optimizer={"momentum": NAN}), ["studies.tiny.optimizer.momentum", "finite"]),
    ("numbers", "warm-up infinite", _study(warmup_epochs=INF), ["studies.tiny.warmup_epochs", "finite"]),
    ("numbers", "fraction NaN", _study(dataset__fraction=NAN), ["studies.tiny.dataset.fraction", "finite"]),
    ("numbers", "checkpoint seconds -inf", _study(checkpoint_seconds=-INF), ["studies.tiny.checkpoint_seconds", "finite"]),
    ("numbers", "regime cut-off NaN", _study(regimes={"linear_efficiency": NAN}), ["studies.tiny.regimes.linear_efficiency", "finite"]),
    ("numbers", "NaN in a model option", _study(model=_model("mlp", width=NAN)), ["studies.tiny.model.options.width", "finite"]),
    ("numbers", "eta0 as YAML string 1e-3", _study(eta0="1e-3"), ["studies.tiny.eta0", "read by YAML as a string", "write 1.0e-3"]),
    ("numbers", "quoted weight decay", _study(optimizer={"weight_decay": "5e-4"}), ["studies.tiny.optimizer.weight_decay", "write 5.0e-4"]),
    ("numbers", "quoted epochs", _study(epochs="2"), ["studies.tiny.epochs", "'2' is a string: in a YAML file write it without quotes", "--configfile"]),
    ("numbers", "fractional epochs", _study(epochs=2.5), ["studies.tiny.epochs", "expected integer", "2.5"]),
    # seeds
    ("seeds", "seed beyond the generator range", _study(seeds=[TOO_BIG_SEED]), ["studies.tiny.seeds.0", "<= 4294967295", str(TOO_BIG_SEED)]),
    ("seeds", "seed 2^32", _study(seeds=[0, 2**32]), ["studies.tiny.seeds.1", "<= 4294967295"]),
    ("seeds", "split seed beyond the range", _study(dataset__split_seed=2**63), ["studies.tiny.dataset.split_seed", "<= 4294967295"]),
    ("seeds", "negative split seed", _study(dataset__split_seed=-3), ["studies.tiny.dataset.split_seed", ">= 0"]),
    ("seeds", "boolean seed", _study(seeds=[0, True]), ["studies.tiny.seeds.1", "expected integer", "True"]),
    ("seeds", "duplicate seeds", _study(seeds=[1, 1]), ["studies.tiny.seeds", "unique"]),
    # batch sizes against the data
    ("data size", "batch above max_examples", _study(dataset__max_examples=40),
     ["studies.tiny.batch_sizes", "64 is larger than the 40 training examples", "<= 40"]),
    ("data size", "batch above a small fraction", _study(dataset__fraction=0.01),
     ["studies.tiny.batch_sizes", "64 is larger than the", "fraction"]),
    ("data size", "batch above the split left by test_fraction", _study(dataset={"name": "digits", "options": {"test_fraction": 0.99}}),
     ["studies.tiny.batch_sizes", "larger than the 20 training examples"]),
    ("data size", "batch above n_train", _study(dataset={"name": "teacher", "options": {"n_train": 48}}),
     ["studies.tiny.batch_sizes", "64 is larger than the 48 training examples"]),
    ("data size", "batch above a real dataset's fraction", {**_study(dataset={"name": "cifar10", "fraction": 0.001}), "download": True},
     ["studies.tiny.batch_sizes", "64 is larger than the 50 training examples"]),
    ("data size", "batch above mnist train_examples", {**_study(dataset={"name": "mnist", "options": {"train_examples": 60}}), "download": True},
     ["studies.tiny.batch_sizes", "64 is larger than the 60 training examples"]),
    # model options: type and range from the builder's annotations and batchscale.options
    ("model options", "hidden a string", _study(model=_model("mlp", hidden="abc")), ["studies.tiny.model.options.hidden", "expected array", "'abc'"]),
    ("model options", "negative hidden size", _study(model=_model("mlp", hidden=[-5])), ["studies.tiny.model.options.hidden.0", ">= 1", "-5"]),
    ("model options", "zero hidden size", _study(model=_model("mlp", hidden=[16, 0])), ["studies.tiny.model.options.hidden.1", ">= 1"]),
    ("model options", "hidden sizes as strings", _study(model=_model("mlp", hidden=["64"])), ["studies.tiny.model.options.hidden.0", "expected integer", "without quotes"]),
    ("model options", "width zero", _study(model=_model("mlp", width=0)), ["studies.tiny.model.options.width", "> 0", "got 0"]),
    ("model options", "negative width", _study(model=_model("resnet18", width=-1)), ["studies.tiny.model.options.width", "> 0"]),
    ("model options", "width as a string", _study(model=_model("cnn", width="1")), ["studies.tiny.model.options.width", "expected number"]),
    ("model options", "unsupported activation", _study(model=_model("mlp", activation="gelu")),
     ["studies.tiny.model.options.activation", "'gelu' is not allowed", "relu, tanh"]),
    ("model options", "no channels", _study(model=_model("cnn", channels=[])), ["studies.tiny.model.options.channels", "at least 1"]),
    ("model options", "channels not a list", _study(model=_model("cnn_bn", channels=32)), ["studies.tiny.model.options.channels", "expected array"]),
    ("model options", "batch_norm a string", _study(model=_model("cnn", batch_norm="yes")), ["studies.tiny.model.options.batch_norm", "expected boolean"]),
    ("model options", "dropout of one", _study(model=_model("alexnet", dropout=1.0)), ["studies.tiny.model.options.dropout", "< 1"]),
    ("model options", "lstm zero layers", _study(dataset={"name": "text_corpus"}, model=_model("lstm", layers=0)),
     ["studies.tiny.model.options.layers", ">= 1"]),
    ("model options", "option of another model", _study(model=_model("linear", hidden=[8])), ["studies.tiny.model.options.hidden", "unknown option", "(none)"]),
    # dataset options
    ("dataset options", "n_train quoted", _study(dataset={"name": "teacher", "options": {"n_train": "1000"}}),
     ["studies.tiny.dataset.options.n_train", "expected integer", "without quotes"]),
    ("dataset options", "one class", _study(dataset={"name": "teacher", "options": {"classes": 1}}), ["studies.tiny.dataset.options.classes", ">= 2"]),
    ("dataset options", "test fraction one", _study(dataset={"name": "digits", "options": {"test_fraction": 1.0}}),
     ["studies.tiny.dataset.options.test_fraction", "< 1"]),
    ("dataset options", "negative difficulty", _study(dataset={"name": "synthetic_images", "options": {"difficulty": -1}}),
     ["studies.tiny.dataset.options.difficulty", ">= 0"]),
    ("dataset options", "label noise above one", _study(dataset={"name": "teacher", "options": {"label_noise": 2}}),
     ["studies.tiny.dataset.options.label_noise", "<= 1"]),
    ("dataset options", "segmentation with one class", _study(dataset={"name": "synthetic_segmentation", "options": {"num_classes": 1}}),
     ["studies.tiny.dataset.options.num_classes", ">= 2"]),
    ("dataset options", "text bptt zero", _study(dataset={"name": "text_corpus", "options": {"bptt": 0}}),
     ["studies.tiny.dataset.options.bptt", ">= 1"]),
    ("dataset options", "mnist train_examples quoted", _study(dataset={"name": "mnist", "options": {"train_examples": "5"}}),
     ["studies.tiny.dataset.options.train_examples", "expected integer or null"]),
    ("dataset options", "wikitext2 unknown split", _study(dataset={"name": "wikitext2", "options": {"test_split": "train"}}),
     ["studies.tiny.dataset.options.test_split", "'train' is not allowed", "test, valid"]),
    ("dataset options", "cityscapes size of three", _study(dataset={"name": "cityscapes", "options": {"size": [1, 2, 3]}}),
     ["studies.tiny.dataset.options.size"]),
    ("dataset options", "custom dataset not importable", _study(dataset={"name": "mylab.nowhere:vectors"}),
     ["studies.tiny.dataset.name", "cannot import 'mylab.nowhere:vectors'"]),
    # model and data that do not fit each other
    ("model and data", "language model on images", _study(model={"name": "lstm"}),
     ["studies.tiny.model", "'lstm' cannot be built", "language model"]),
    ("model and data", "segmentation model on a classification task", _study(model={"name": "drn_d_22"}),
     ["studies.tiny.model", "'drn_d_22' maps", "classification dataset needs (2, 10)"]),
    ("model and data", "classifier on segmentation", _study(dataset={"name": "synthetic_segmentation"}),
     ["studies.tiny.model", "'linear' maps", "segmentation dataset needs"]),
    ("model and data", "tied LSTM of unequal sizes", _study(dataset={"name": "text_corpus"}, model=_model("lstm", tie_weights=True, hidden=8)),
     ["studies.tiny.model", "tie_weights needs embedding_dim == hidden"]),
    # comparisons
    ("comparisons", "strategy no study runs", _with_comparison("lsr"),
     ["comparisons.g.strategy", "'lsr' is not run by study 'tiny'", "(blr)"]),
    ("comparisons", "strategy one study lacks", _with_comparison("srsr", strategies=["blr", "srsr"]),
     ["comparisons.g.strategy", "'srsr' is not run by study 'tiny'"]),
    ("comparisons", "default strategy blr not run", _with_comparison(None, strategies=["srsr"]),
     ["comparisons.g.strategy", "'blr' is not run by study 'other'", "none"]),
    ("comparisons", "tuned one study lacks", _with_comparison("tuned", strategies=["blr", "tuned"]),
     ["comparisons.g.strategy", "'tuned' is not run by study 'tiny'", "(blr)"]),
    ("comparisons", "one study only", {**tiny_config(), "comparisons": {"g": {"studies": ["tiny"]}}}, ["comparisons.g.studies", "at least 2"]),
    ("comparisons", "unknown metric", {**_with_comparison(None), "comparisons": {"g": {"studies": ["tiny", "other"], "metric": "loss"}}},
     ["comparisons.g.metric", "train_loss, test_loss, test_error"]),
    ("comparisons", "labels of the wrong length", {**_with_comparison(None), "comparisons": {"g": {"studies": ["tiny", "other"], "labels": ["a"]}}},
     ["comparisons.g.labels", "one label per study"]),
    # the grid and its schedule
    ("grid", "warm-up longer than training with lsr", _study(strategies=["lsr"], warmup_epochs=3),
     ["studies.tiny.warmup_epochs", "longer than the 2 epochs", "lsr", "at most 2"]),
    ("grid", "warm-up strategies naming an unknown one", _study(warmup_strategies=["lsrr"]), ["studies.tiny.warmup_strategies.0", "blr, lsr, srsr, longer"]),
    ("grid", "step milestone at one", _study(schedule={"name": "step", "milestones": [1.0]}), ["studies.tiny.schedule.milestones.0", "< 1"]),
    ("grid", "gamma zero", _study(schedule={"name": "step", "gamma": 0}), ["studies.tiny.schedule.gamma", "> 0"]),
    ("grid", "longer cap below one", _study(longer_max_factor=0.5), ["studies.tiny.longer_max_factor", ">= 1"]),
    ("grid", "divergence factor one", _study(divergence_factor=1), ["studies.tiny.divergence_factor", "> 1"]),
    ("grid", "max_steps zero", _study(max_steps=0), ["studies.tiny.max_steps", ">= 1"]),
    ("grid", "bootstrap of 5 samples", _study(bootstrap={"samples": 5}), ["studies.tiny.bootstrap.samples", ">= 10"]),
    ("grid", "confidence one", _study(bootstrap={"confidence": 1}), ["studies.tiny.bootstrap.confidence", "< 1"]),
    ("grid", "evaluation batch zero", _study(evaluation={"batch_size": 0}), ["studies.tiny.evaluation.batch_size", ">= 1"]),
    ("grid", "one batch size", _study(batch_sizes=[32], base_batch=32), ["studies.tiny.batch_sizes", "at least 2"]),
    ("grid", "a range of one batch size", _study(batch_sizes={"min": 32, "max": 32}), ["studies.tiny.batch_sizes", "at least 2"]),
    ("grid", "missing base batch", _study(base_batch=DELETE), ["studies.tiny.base_batch", "missing"]),
    ("grid", "missing dataset", _study(dataset=DELETE), ["studies.tiny.dataset.name", "missing"]),
    # structure
    ("structure", "study name with a slash", {"studies": {"a/b": tiny_config()["studies"]["tiny"]}}, ["studies", "'a/b'", "letters, digits"]),
    ("structure", "studies a list", {"studies": [tiny_config()["studies"]["tiny"]]}, ["config key studies", "expected object"]),
    ("structure", "top level a list", [1, 2], ["top level must be a mapping"]),
    ("structure", "download a string", {**tiny_config(), "download": "yes"}, ["config key download", "expected boolean"]),
    ("structure", "train threads zero", {**tiny_config(), "train_threads": {"max": 0}}, ["train_threads.max", ">= 1"]),
    ("structure", "unknown key under defaults", {**tiny_config(), "defaults": {"learning_rate": 0.1}}, ["config key defaults", "'learning_rate'", "eta0"]),
    # optimizers and the strategies that scale them
    ("optimizer", "adam_srsr with sgd", _study(strategies=["blr", "adam_srsr"]), ["studies.tiny.strategies", "'adam_srsr'", "optimizer.name: adamw", "sgd allows blr, lsr, srsr, longer"]),
    ("optimizer", "adam_srsr beta1 not positive", _study(optimizer={"name": "adamw"}, strategies=["adam_srsr"], batch_sizes=[32, 512]), ["studies.tiny.batch_sizes", "batch size 512", "beta1", "largest batch size allowed is 319"]),
    ("optimizer", "adam_srsr beta2 not positive", _study(optimizer={"name": "adamw", "betas": [0.99, 0.9]}, strategies=["adam_srsr"], batch_sizes=[32, 320]), ["studies.tiny.batch_sizes", "batch size 320", "beta2", "largest batch size allowed is 319"]),
    ("optimizer", "momentum for adamw", _study(optimizer={"name": "adamw", "momentum": 0.9}), ["studies.tiny.optimizer", "momentum not read by optimizer 'adamw'", "adamw reads name, betas, eps"]),
    ("optimizer", "betas for sgd", _study(optimizer__betas=[0.9, 0.99]), ["studies.tiny.optimizer", "betas not read by optimizer 'sgd'", "sgd reads momentum"]),
    ("optimizer", "unknown optimizer", _study(optimizer={"name": "adam"}), ["studies.tiny.optimizer.name", "'adam'", "sgd, adamw"]),
    ("optimizer", "beta2 of 1", _study(optimizer={"name": "adamw", "betas": [0.9, 1.0]}), ["studies.tiny.optimizer.betas.1", "< 1"]),
    ("optimizer", "eps of 0", _study(optimizer={"name": "adamw", "eps": 0.0}), ["studies.tiny.optimizer.eps", "> 0"]),
]

ALL_CASES = [("basic", *case) for case in BASIC_CASES] + CASES


def _load(config):
    return load_config(copy.deepcopy(config) if isinstance(config, dict) else config)


def test_the_table_has_at_least_80_configs_in_every_category():
    assert len(ALL_CASES) >= 80
    categories = {case[0] for case in CASES}
    assert len(categories) >= 9


@pytest.mark.parametrize("config, fragments", [c[2:] for c in CASES], ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_refused_in_one_line_naming_the_key(config, fragments):
    with pytest.raises(ConfigError) as caught:
        _load(config)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


GOOD_NEIGHBOURS = [
    # the kin of a bad case that must still pass
    ("warm-up longer than training, but no strategy warms up", _study(strategies=["blr", "srsr"], warmup_epochs=5)),
    ("batch equal to the training examples", _study(dataset__max_examples=64)),
    ("largest allowed seed", _study(seeds=[2**32 - 1])),
    ("comparison of a strategy both studies run", _with_comparison("blr")),
    ("adam_srsr up to the largest batch beta1 allows", _study(optimizer={"name": "adamw"}, strategies=["adam_srsr", "lsr"], batch_sizes=[32, 256])),
    ("sgd and adamw studies compared", _with_comparison("blr", optimizer={"name": "adamw"}, eta0=1e-3)),
    ("sgd and adamw tuned envelopes compared", _tuned_comparison(strategies=["lsr", "tuned"], optimizer={"name": "adamw"},
                                                                  eta0=1e-3)),
    ("mlp with tanh and no hidden layer", _study(model=_model("mlp", hidden=[], activation="tanh"))),
]


@pytest.mark.parametrize("config", [c[1] for c in GOOD_NEIGHBOURS], ids=[c[0] for c in GOOD_NEIGHBOURS])
def test_the_neighbours_of_bad_configs_are_accepted(config):
    assert load_config(copy.deepcopy(config))["studies"]


# --------------------------------------------------------------------------------------------------
# YAML files: syntax, duplicate keys, strings that look like numbers; through `batchscale validate`

TINY_YAML = """studies:
  tiny:
    dataset: {name: digits}
    model: {name: linear}
    eta0: 0.05
    base_batch: 32
    epochs: 2
    batch_sizes: [32, 64]
"""
BAD_FILES = [
    ("syntax error", TINY_YAML.replace("eta0: 0.05", "eta0: [0.05"), ["line", "column", "not valid YAML"]),
    ("bad indentation", TINY_YAML.replace("    epochs: 2", "  epochs: 2\n      x: 1"), ["line", "column", "not valid YAML"]),
    ("duplicate key", TINY_YAML.replace("    epochs: 2", "    epochs: 2\n    eta0: 0.1"),
     ["line 8, column 5", "duplicate key 'eta0'", "first given on line 5"]),
    ("duplicate study", TINY_YAML + "  tiny:\n    eta0: 0.1\n", ["line 9, column 3", "duplicate key 'tiny'"]),
    ("eta0 1e-3", TINY_YAML.replace("eta0: 0.05", "eta0: 1e-3"), ["studies.tiny.eta0", "read by YAML as a string", "write 1.0e-3"]),
    ("eta0 .nan", TINY_YAML.replace("eta0: 0.05", "eta0: .nan"), ["studies.tiny.eta0", "finite"]),
    ("empty file", "", ["missing required key 'studies'"]),
    ("studies empty", "studies: {}\n", ["config key studies", "at least 1"]),
]


def _validate(path):
    return subprocess.run([sys.executable, "-m", "batchscale", "validate", str(path)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("text, fragments", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_files_are_refused_in_one_line_with_their_place(tmp_path, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


CLI_SAMPLE = ["numbers: eta0 NaN", "seeds: seed beyond the generator range", "data size: batch above max_examples",
              "model options: unsupported activation", "comparisons: strategy no study runs"]


def test_validate_cli_prints_the_same_one_line_for_a_sample(tmp_path):
    by_id = {f"{c[0]}: {c[1]}": c for c in CASES}
    for name in CLI_SAMPLE:
        _, _, config, fragments = by_id[name]
        path = write_config(tmp_path / "bad.yaml", config)
        result = _validate(path)
        assert result.returncode == 2, name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("batchscale: error: config key"), (name, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert fragments[0] in lines[0], (name, lines[0])
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(BAD_FILES[2][1])
    result = _validate(duplicate)
    assert result.returncode == 2 and f"config file {duplicate}, line 8, column 5: duplicate key 'eta0'" in result.stderr


# --------------------------------------------------------------------------------------------------
# Through `snakemake -n`: one case of each category (a dry run takes seconds), plus the file-level ones.

SNAKEMAKE_SAMPLE = ["numbers: eta0 NaN", "seeds: seed beyond the generator range", "data size: batch above max_examples",
                    "model options: negative hidden size", "dataset options: one class",
                    "model and data: language model on images", "comparisons: strategy no study runs",
                    "grid: warm-up longer than training with lsr", "structure: unknown key under defaults"]


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("bad_configs"))


def _dry_run_refuses(workdir, config_name, fragment):
    result = snakemake(workdir, "-n", configfile=config_name, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("batchscale: error:")]
    assert len(errors) == 1 and fragment in errors[0], output[-2000:]
    assert not (workdir / "results").exists() and "Job stats" not in output  # no job planned, none started


@pytest.mark.slow
@pytest.mark.parametrize("name", SNAKEMAKE_SAMPLE)
def test_snakemake_dry_run_refuses_one_case_of_each_category(workflow_copy, name):
    _, _, config, fragments = {f"{c[0]}: {c[1]}": c for c in CASES}[name]
    write_config(workflow_copy / "bad.yaml", config)
    _dry_run_refuses(workflow_copy, "bad.yaml", fragments[0])


@pytest.mark.slow
def test_snakemake_dry_run_refuses_a_duplicate_key_and_empty_studies(workflow_copy):
    (workflow_copy / "duplicate.yaml").write_text(BAD_FILES[2][1])
    _dry_run_refuses(workflow_copy, "duplicate.yaml", "duplicate key 'eta0'")
    (workflow_copy / "empty.yaml").write_text("studies: {}\n")
    _dry_run_refuses(workflow_copy, "empty.yaml", "config key studies: needs at least 1")
    # a syntax error is Snakemake's to report (it reads --configfile before the Snakefile): no job either
    (workflow_copy / "broken.yaml").write_text(BAD_FILES[0][1])
    broken = snakemake(workflow_copy, "-n", configfile="broken.yaml", check=False)
    assert broken.returncode != 0 and "not valid JSON or YAML" in broken.stdout + broken.stderr
    assert not (workflow_copy / "results").exists() and "Job stats" not in broken.stdout


# --------------------------------------------------------------------------------------------------
# `snakemake --config 'key={a: 2}'` passes nested values as strings: the hint must not say "remove the quotes"

def test_a_string_from_snakemake_config_gets_a_hint_that_fits_the_command_line():
    from snakemake.cli import parse_config  # what snakemake does with --config, not a copy of it

    overrides = parse_config(["defaults={epochs: 2}"])
    assert overrides == {"defaults": {"epochs": "2"}}  # a string: writing it without quotes changes nothing
    with pytest.raises(ConfigError) as caught:
        load_config({**tiny_config(), **overrides})
    message = str(caught.value)
    assert "\n" not in message and message.startswith("config key defaults.epochs: expected integer, got '2'")
    assert "in a YAML file write it without quotes" in message
    assert "snakemake --config passes the values inside {...} as strings, so set it in a --configfile" in message
    with pytest.raises(ConfigError, match=r"in a YAML file write 1\.0e-3; snakemake --config passes"):
        load_config({**tiny_config(), **parse_config(["defaults={eta0: 1e-3}"])})


@pytest.mark.slow
def test_snakemake_dry_run_with_a_config_string_gives_that_hint(workflow_copy):
    write_config(workflow_copy / "good.yaml", tiny_config())
    result = snakemake(workflow_copy, "-n", "--config", "defaults={epochs: 2}", configfile="good.yaml", check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("batchscale: error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stdout + result.stderr
    assert "config key defaults.epochs" in errors[0] and "set it in a --configfile" in errors[0]
    assert "quoted string" not in errors[0]
    assert not (workflow_copy / "results").exists()
