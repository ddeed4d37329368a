"""Config validation: defaults, the run grid, and a table of bad configs that must fail early."""

import copy
import subprocess
import sys

import pytest

from batchscale.errors import ConfigError
from batchscale.spec.runs import config_hash, iter_runs, run_config, RunKey
from batchscale.validate import load_config
from conftest import copy_workflow, tiny_config, write_config, snakemake


def test_defaults_are_filled_and_ranges_expanded():
    config = load_config(tiny_config(batch_sizes={"min": 8, "max": 64}))
    study = config["studies"]["tiny"]
    assert study["batch_sizes"] == [8, 16, 32, 64]
    assert study["optimizer"] == {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
                                  "grad_clip": None, "betas": [0.9, 0.999], "eps": 1e-8}
    # an SGD run carries only the keys SGD reads, as before AdamW existed, so its config hash is unchanged
    assert run_config(config, RunKey("tiny", "blr", 8, 0))["optimizer"] == {
        "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "grad_clip": None}
    assert study["schedule"]["name"] == "constant"
    assert study["threshold"] == "lower_quartile_of_largest"
    assert study["evaluation"]["batch_size"] == 1024
    assert config["data_root"] == "data" and config["download"] is False
    assert config["train_threads"] == {"single_thread_below": 256, "max": 2}


def test_defaults_section_applies_to_every_study_and_studies_override_it():
    config = load_config({
        "defaults": {"dataset": {"name": "digits"}, "eta0": 0.1, "base_batch": 8, "epochs": 3,
                     "batch_sizes": [8, 16], "optimizer": {"momentum": 0.5}},
        "studies": {"a": {"model": {"name": "mlp"}},
                    "b": {"model": {"name": "linear"}, "eta0": 0.2, "optimizer": {"nesterov": True}}},
    })
    a, b = config["studies"]["a"], config["studies"]["b"]
    assert a["eta0"] == 0.1 and b["eta0"] == 0.2
    assert b["optimizer"] == {"name": "sgd", "momentum": 0.5, "nesterov": True, "weight_decay": 0.0,  # merged
                              "grad_clip": None, "betas": [0.9, 0.999], "eps": 1e-8}


def test_grid_has_one_run_per_strategy_batch_and_seed():
    config = load_config(tiny_config(strategies=["blr", "lsr"], batch_sizes=[32, 64, 128], seeds=[0, 1]))
    runs = list(iter_runs(config))
    assert len(runs) == 12 and len(set(runs)) == 12
    run = run_config(config, RunKey("tiny", "lsr", 128, 1))
    assert run["lr_peak"] == pytest.approx(0.05 * 128 / 32)
    assert run_config(config, RunKey("tiny", "blr", 128, 1))["lr_peak"] == 0.05


def test_config_hash_ignores_checkpoint_interval_only():
    config = load_config(tiny_config())
    run = run_config(config, RunKey("tiny", "blr", 32, 0))
    assert config_hash(dict(run, checkpoint_seconds=1)) == config_hash(run)
    assert config_hash(dict(run, eta0=0.2)) != config_hash(run)


def _study(**changes):
    config = tiny_config()
    study = config["studies"]["tiny"]
    for dotted, value in changes.items():
        node = study
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf)
        else:
            node[leaf] = value
    return config


DELETE = object()

# (case id, config, substrings the one-line message must contain)
BAD_CONFIGS = [
    ("unknown dataset", _study(dataset__name="cifar11"), ["studies.tiny.dataset.name", "cifar11", "digits", "cifar10"]),
    ("unknown model", _study(model__name="resnet19"), ["studies.tiny.model.name", "resnet19", "resnet18"]),
    ("unknown strategy", _study(strategies=["blr", "lsrr"]), ["studies.tiny.strategies.1", "lsrr", "blr, lsr, srsr, longer"]),
    ("typo in a study key", _study(epoch=3), ["studies.tiny", "'epoch'", "epochs"]),
    ("typo at top level", {**tiny_config(), "comparison": {}}, ["unknown key 'comparison'", "comparisons"]),
    ("typo in a nested key", _study(optimizer={"momentun": 0.9}), ["studies.tiny.optimizer", "'momentun'", "momentum"]),
    ("negative learning rate", _study(eta0=-0.1), ["studies.tiny.eta0", "> 0"]),
    ("zero learning rate", _study(eta0=0), ["studies.tiny.eta0", "> 0"]),
    ("batch size 0", _study(batch_sizes=[0, 32]), ["studies.tiny.batch_sizes.0", ">= 1"]),
    ("micro_batch larger than every batch", _study(micro_batch=128), ["studies.tiny.micro_batch", "larger than the largest batch size 64"]),
    ("micro_batch not dividing a batch", _study(micro_batch=24), ["studies.tiny.micro_batch", "does not divide batch size 32"]),
    ("fraction zero", _study(dataset__fraction=0), ["studies.tiny.dataset.fraction", "> 0"]),
    ("fraction above one", _study(dataset__fraction=1.5), ["studies.tiny.dataset.fraction", "<= 1"]),
    ("range min above max", _study(batch_sizes={"min": 64, "max": 32}), ["studies.tiny.batch_sizes", "min (64) is larger than max (32)"]),
    ("range not powers of two", _study(batch_sizes={"min": 24, "max": 64}), ["studies.tiny.batch_sizes.min", "24 is not a power of two"]),
    ("empty seeds", _study(seeds=[]), ["studies.tiny.seeds", "at least 1"]),
    ("negative seed", _study(seeds=[-1]), ["studies.tiny.seeds.0", ">= 0"]),
    ("missing data_root for a real dataset", {**_study(dataset__name="cifar10"), "data_root": "/nonexistent/data"},
     ["data_root", "/nonexistent/data", "cifar"]),
    ("base batch not in the grid", _study(base_batch=16), ["studies.tiny.base_batch", "16 is not one of the batch sizes"]),
    ("momentum of one", _study(optimizer={"momentum": 1.0}), ["studies.tiny.optimizer.momentum", "< 1"]),
    ("unknown schedule", _study(schedule={"name": "linear"}), ["studies.tiny.schedule.name", "constant, step, cosine"]),
    ("threshold quantile above one", _study(threshold={"quantile_of_largest": 1.5}), ["studies.tiny.threshold", "quantile_of_largest"]),
    ("threshold fixed negative", _study(threshold={"fixed": -1}), ["studies.tiny.threshold", "fixed"]),
    ("unknown threshold rule", _study(threshold="median"), ["studies.tiny.threshold", "lower_quartile_of_largest"]),
    ("unknown device", _study(device="tpu"), ["studies.tiny.device", "auto, cpu, cuda"]),
    ("zero points per decade", _study(evaluation={"points_per_decade": 0}), ["studies.tiny.evaluation.points_per_decade", ">= 1"]),
    ("zero epochs", _study(epochs=0), ["studies.tiny.epochs", ">= 1"]),
    ("warm-up longer than training", _study(warmup_epochs=5, strategies=["blr", "lsr"]),
     ["studies.tiny.warmup_epochs", "longer than the 2 epochs", "lsr"]),
    ("unknown model option", _study(model={"name": "mlp", "options": {"hiden": [8]}}), ["studies.tiny.model.options.hiden", "hidden"]),
    ("batch sizes not a list", _study(batch_sizes="big"), ["studies.tiny.batch_sizes", "list of positive integers"]),
    ("duplicate batch sizes", _study(batch_sizes=[32, 32]), ["studies.tiny.batch_sizes", "unique"]),
    ("unknown precision", _study(precision="fp16"), ["studies.tiny.precision", "fp32, bf16"]),
    ("missing learning rate", _study(eta0=DELETE), ["studies.tiny.eta0", "missing"]),
    ("no studies", {"studies": {}}, ["studies", "at least 1"]),
    ("unknown metric", _study(metrics=["accuracy"]), ["studies.tiny.metrics.0", "train_loss, test_loss, test_error"]),
    ("comparison of an unknown study", {**tiny_config(), "comparisons": {"g": {"studies": ["tiny", "other"]}}},
     ["comparisons.g.studies", "'other'", "tiny"]),
    ("unknown dataset option", _study(dataset={"name": "digits", "options": {"test_fraktion": 0.1}}),
     ["studies.tiny.dataset.options.test_fraktion", "test_fraction"]),
]


@pytest.mark.parametrize("config, fragments", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_fails_with_one_line_naming_the_key(config, fragments):
    with pytest.raises(ConfigError) as caught:
        load_config(copy.deepcopy(config))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_table_is_large_enough():
    assert len(BAD_CONFIGS) >= 25


def test_cli_validate_prints_one_line_and_no_traceback(tmp_path):
    path = write_config(tmp_path / "bad.yaml", _study(strategies=["lsrr"]))
    result = subprocess.run([sys.executable, "-m", "batchscale", "validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "studies.tiny.strategies.0" in result.stderr


@pytest.mark.parametrize("case", ["unknown strategy", "micro_batch larger than every batch", "missing data_root for a real dataset"])
def test_snakemake_stops_before_any_job_with_the_one_line_message(tmp_path, case):
    config = dict((c[0], c[1]) for c in BAD_CONFIGS)[case]
    copy_workflow(tmp_path)
    write_config(tmp_path / "config.yaml", config)
    result = snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("batchscale: error:")]
    assert len(errors) == 1
    assert not (tmp_path / "results").exists() and "train" not in result.stdout
