"""The paper presets (Table 1 exactly; the smoke preset end to end) and `batchscale plan`."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from batchscale.cli import main
from batchscale.errors import ConfigError
from batchscale.spec.runs import iter_runs
from batchscale.spec.schema import load_schema
from batchscale.validate import load_config
from batchscale.engine.grid import evaluation_steps
from batchscale.jobs.plan import load_config_without_data, make_plan
from batchscale.validate import data_shape
from batchscale.store.traces import read_trace
from conftest import REPO, copy_repository, snakemake

PAPER = REPO / "presets" / "paper.yaml"
SMOKE = REPO / "presets" / "paper-smoke.yaml"

# Table 1 of Golmant et al. 2018, one row per (dataset, model):
# study: (dataset, model, strategies, eta0, warm-up epochs W, epochs E, batch sizes 2^a..2^b)
TABLE_1 = {
    "mnist_resnet34": ("mnist", "resnet34", ["blr", "lsr"], 0.1, 10, 200, (6, 14)),
    "cifar10_resnet34": ("cifar10", "resnet34", ["blr", "lsr", "srsr"], 0.1, 10, 200, (6, 14)),
    "cifar10_alexnet": ("cifar10", "alexnet", ["blr", "lsr", "srsr"], 0.1, 10, 200, (6, 14)),
    "cifar10_mobilenetv2": ("cifar10", "mobilenetv2", ["blr", "lsr", "srsr"], 0.1, 10, 200, (6, 14)),
    "cifar10_vgg16": ("cifar10", "vgg16_bn", ["blr", "lsr", "srsr"], 0.1, 10, 200, (6, 14)),
    "cifar100_resnet34": ("cifar100", "resnet34", ["blr", "lsr"], 0.1, 10, 200, (6, 14)),
    "svhn_resnet34": ("svhn", "resnet34", ["blr", "lsr"], 0.1, 10, 200, (6, 14)),
    "wikitext2_lstm": ("wikitext2", "lstm", ["blr", "lsr"], 20, 3, 40, (3, 10)),
    "cityscapes_drn_d_22": ("cityscapes", "drn_d_22", ["blr", "lsr"], 0.01, 10, 100, (3, 11)),
}
# Fig. 4: ResNet-34 on fractions of CIFAR-10 and of all of SVHN (train + extra, ~600k); 100% of CIFAR-10 is
# the Table-1 study. study: (dataset, fraction, svhn extra, largest batch exponent)
FIG_4 = {
    "cifar10_resnet34_frac50": ("cifar10", 0.5, False, 14),
    "cifar10_resnet34_frac25": ("cifar10", 0.25, False, 13),  # 12,500 images: 2^14 does not fit
    "svhn600k_resnet34": ("svhn", 1.0, True, 14),
    "svhn600k_resnet34_frac50": ("svhn", 0.5, True, 14),
    "svhn600k_resnet34_frac25": ("svhn", 0.25, True, 14),
}


@pytest.fixture(scope="module")
def paper():
    return load_config_without_data(PAPER)


def test_paper_preset_matches_the_schema_and_only_lacks_the_data_files(tmp_path, monkeypatch):
    raw = yaml.safe_load(PAPER.read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(raw)  # the bare schema, no defaults
    assert raw["data_root"] == "data"
    monkeypatch.chdir(tmp_path)  # no data/ here: the full check names the missing files and nothing else
    with pytest.raises(ConfigError, match=r"^config key data_root: .* not found"):
        load_config(PAPER)


def test_paper_preset_has_exactly_the_table_1_rows_and_the_fig_4_fractions(paper):
    studies = paper["studies"]
    assert set(studies) == set(TABLE_1) | set(FIG_4)
    for name, (dataset, model, strategies, eta0, warmup, epochs, (low, high)) in TABLE_1.items():
        study = studies[name]
        assert study["dataset"]["name"] == dataset, name
        assert study["model"]["name"] == model, name
        assert study["strategies"] == strategies, name
        assert study["eta0"] == eta0, name
        assert study["warmup_epochs"] == warmup and study["warmup_strategies"] == ["lsr"], name
        assert study["epochs"] == epochs, name
        assert study["batch_sizes"] == [2**k for k in range(low, high + 1)], name
        assert study["base_batch"] == 2**low, name  # m0: the smallest batch of the row
        assert study["dataset"]["fraction"] == 1.0, name
    # Fig. 3 compares datasets of 50k examples: MNIST and SVHN are cut to 50,000
    assert studies["mnist_resnet34"]["dataset"]["options"]["train_examples"] == 50_000
    assert studies["svhn_resnet34"]["dataset"]["options"]["train_examples"] == 50_000
    assert not studies["svhn_resnet34"]["dataset"]["options"].get("extra", False)
    for name, (dataset, fraction, extra, high) in FIG_4.items():
        study = studies[name]
        assert (study["dataset"]["name"], study["model"]["name"]) == (dataset, "resnet34"), name
        assert study["dataset"]["fraction"] == fraction, name
        assert study["dataset"]["options"].get("extra", False) == extra, name
        assert "train_examples" not in study["dataset"]["options"], name
        assert study["batch_sizes"] == [2**k for k in range(6, high + 1)], name
        assert (study["eta0"], study["warmup_epochs"], study["epochs"]) == (0.1, 10, 200), name
        assert study["strategies"] == ["blr"], name


def test_paper_preset_settings_for_the_gpu_and_the_optimizer(paper):
    for name, study in paper["studies"].items():
        assert study["device"] == "auto" and study["precision"] == "bf16" and study["channels_last"], name
        assert study["seeds"] == [0], name
        assert study["schedule"]["name"] == "step", name
        image_classifier = study["model"]["name"] in ("resnet34", "alexnet", "mobilenetv2", "vgg16_bn")
        if image_classifier:
            assert study["optimizer"]["momentum"] == 0.9 and study["optimizer"]["weight_decay"] == 5e-4, name
            assert study["micro_batch"] == 1024, name
        assert study["dataset"]["augment"] == study["dataset"]["name"].startswith("cifar"), name
    lstm, drn = paper["studies"]["wikitext2_lstm"], paper["studies"]["cityscapes_drn_d_22"]
    assert lstm["optimizer"]["momentum"] == 0.0 and lstm["micro_batch"] is None
    assert drn["micro_batch"] == 128 and drn["optimizer"]["weight_decay"] == 1e-4


def test_paper_preset_comparisons_are_figs_3_and_4(paper):
    groups = {name: spec["studies"] for name, spec in paper["comparisons"].items()}
    assert groups == {
        "fig3_architectures": ["cifar10_resnet34", "cifar10_vgg16", "cifar10_alexnet", "cifar10_mobilenetv2"],
        "fig3_datasets": ["cifar10_resnet34", "cifar100_resnet34", "mnist_resnet34", "svhn_resnet34"],
        "fig4_cifar10_fractions": ["cifar10_resnet34", "cifar10_resnet34_frac50", "cifar10_resnet34_frac25"],
        "fig4_svhn_fractions": ["svhn600k_resnet34", "svhn600k_resnet34_frac50", "svhn600k_resnet34_frac25"],
    }


# ---------------------------------------------------------------------------------------------------
# plan


def test_plan_counts_steps_examples_and_flops_as_computed_by_hand():
    # linear model on 64 inputs and 10 classes: forward = 2 x 64 x 10 = 1280 FLOPs (biases are not counted)
    config = {"studies": {"lin": {
        "dataset": {"name": "teacher", "options": {"n_train": 1000, "n_test": 200, "dim": 64}},
        "model": {"name": "linear"}, "eta0": 0.1, "base_batch": 32, "epochs": 2, "batch_sizes": [32, 64],
        "strategies": ["blr", "longer"], "evaluation": {"points_per_decade": 4, "train_subset": 256},
        "device": "cpu"}}}
    plan = make_plan(config, gpu_tflops=400, utilisation=0.5)
    (study,) = plan.studies
    assert study.forward_flops == 1280
    assert (study.data.n_train, study.data.n_test) == (1000, 200)
    runs = {(r.strategy, r.batch_size): r for r in study.runs}
    # floor(1000/32) = 31 steps per epoch, floor(1000/64) = 15; `longer` at m = 2 m0 trains 2x the epochs
    expected_steps = {("blr", 32): 31 * 2, ("blr", 64): 15 * 2, ("longer", 32): 31 * 2, ("longer", 64): 15 * 4}
    # log grid, 4 points per decade, plus the final step
    expected_points = {62: [0, 1, 2, 3, 6, 10, 18, 32, 56, 62], 30: [0, 1, 2, 3, 6, 10, 18, 30],
                       60: [0, 1, 2, 3, 6, 10, 18, 32, 56, 60]}
    for key, steps in expected_steps.items():
        run, m = runs[key], key[1]
        assert run.steps == steps and run.examples == steps * m
        assert evaluation_steps(4, steps) == expected_points[steps]
        assert run.eval_points == len(expected_points[steps])
        assert run.train_flops == 3 * 1280 * steps * m
        # every evaluation point: the 256-example training subset and the 200 test examples, forward only;
        # the end-of-run linear-approximation error: one batch gradient (3x) and two subset passes
        evaluated = len(expected_points[steps]) * (256 + 200) + 2 * 256
        assert run.eval_flops == 1280 * evaluated + 3 * 1280 * m
    # one pack job per batch size and strategy
    assert study.n_runs == 4 and study.jobs == 4 and study.trials == 0 and study.steps == 62 + 30 + 62 + 60
    total = sum(r.train_flops + r.eval_flops for r in study.runs)
    assert study.flops == total
    assert plan.gpu_hours(total) == pytest.approx(total / (400e12 * 0.5) / 3600)
    capped = make_plan({**config, "studies": {"lin": {**config["studies"]["lin"], "max_steps": 40}}})
    assert sorted(r.steps for r in capped.studies[0].runs) == [30, 40, 40, 40]


def test_plan_sizes_real_datasets_from_published_numbers_without_files(tmp_path):
    root = str(tmp_path)  # empty: nothing is read
    assert data_shape({"name": "cifar10"}, root).n_train == 50_000
    assert data_shape({"name": "cifar10", "fraction": 0.25}, root).n_train == 12_500
    assert data_shape({"name": "cifar100", "max_examples": 1000}, root).n_train == 1000
    mnist = data_shape({"name": "mnist", "options": {"train_examples": 50_000}}, root)
    assert (mnist.n_train, mnist.n_test, mnist.spec.input_shape) == (50_000, 10_000, (1, 32, 32))
    assert data_shape({"name": "svhn", "options": {"extra": True}}, root).n_train == 604_388
    svhn = data_shape({"name": "svhn", "max_test_examples": 5000}, root)
    assert (svhn.n_train, svhn.n_test) == (73_257, 5000)
    wiki = data_shape({"name": "wikitext2", "options": {"bptt": 35}}, root)
    assert (wiki.n_train, wiki.spec.input_shape, wiki.spec.num_classes) == ((2_088_628 - 1) // 35, (35,), 33_278)
    city = data_shape({"name": "cityscapes", "options": {"size": [128, 256]}}, root)
    assert (city.n_train, city.n_test, city.spec.input_shape, city.spec.num_classes) == (2975, 500, (3, 128, 256), 19)


def test_plan_checks_options_and_names_but_not_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad_option = {"studies": {"s": {"dataset": {"name": "svhn", "options": {"extra_split": True}},
                                    "model": {"name": "resnet34"}, "eta0": 0.1, "base_batch": 64, "epochs": 1,
                                    "batch_sizes": [64, 128]}}}
    with pytest.raises(ConfigError, match="extra_split"):
        make_plan(bad_option)
    with pytest.raises(ConfigError, match="unknown model"):
        make_plan({"studies": {"s": {**bad_option["studies"]["s"], "dataset": {"name": "svhn"},
                                     "model": {"name": "resnet35"}}}})
    # the real check is back in force after the plan
    with pytest.raises(ConfigError, match="data_root"):
        load_config({"studies": {"s": {**bad_option["studies"]["s"], "dataset": {"name": "svhn"}}}})


def test_plan_refuses_a_batch_larger_than_the_training_split():
    # 25% of CIFAR-10 is 12,500 images: a batch of 16,384 cannot take one step
    config = {"studies": {"big": {"dataset": {"name": "cifar10", "fraction": 0.25}, "model": {"name": "linear"},
                                  "eta0": 0.1, "base_batch": 64, "epochs": 1, "batch_sizes": [64, 16384]}}}
    with pytest.raises(ConfigError, match=r"^config key studies.big.batch_sizes: 16384 is larger than the 12500 "):
        make_plan(config)


def test_plan_of_the_paper_preset_lists_every_study_and_totals(capsys):
    assert main(["plan", str(PAPER)]) == 0
    out = capsys.readouterr().out
    for name in list(TABLE_1) + list(FIG_4):
        assert f"\n{name} " in out, name
    assert "400 TFLOP/s x 0.4 utilisation = 160 TFLOP/s" in out
    assert "\ntotal " in out and "WARNING" not in out
    runs = sum(1 for _ in iter_runs(load_config_without_data(PAPER)))
    assert f"{runs} training runs (0 of them trials of the tuned search) in " in out


def test_plan_reports_a_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("studies: {s: {dataset: {name: digits}, model: {name: linear}, eta0: 0.1, base_batch: 8, "
                   "epochs: 1, batch_sizes: [8, 16], colour: red}}\n")
    assert main(["plan", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "colour" in err
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2
    mismatch = tmp_path / "mismatch.yaml"  # an LSTM on images: found by building the model, before any job
    mismatch.write_text("studies: {s: {dataset: {name: digits}, model: {name: lstm}, eta0: 0.1, base_batch: 8, "
                        "epochs: 1, batch_sizes: [8, 16]}}\n")
    capsys.readouterr()
    assert main(["plan", str(mismatch)]) == 2
    err = capsys.readouterr().err
    assert "studies.s.model: 'lstm' cannot be built" in err and "lstm is a language model" in err


# ---------------------------------------------------------------------------------------------------
# the smoke preset


def test_smoke_preset_covers_every_model_and_task_of_the_paper():
    config = load_config(SMOKE)
    pairs = {(s["model"]["name"], s["dataset"]["name"]) for s in config["studies"].values()}
    assert {model for model, _ in pairs} == {"resnet34", "vgg16_bn", "alexnet", "mobilenetv2", "lstm", "drn_d_22"}
    assert {"text_corpus", "synthetic_segmentation", "synthetic_images"} == {d for _, d in pairs}
    assert all(s["device"] == "cpu" and s["max_steps"] for s in config["studies"].values())
    assert config["comparisons"]
    assert len(list(iter_runs(config))) == 32


@pytest.mark.slow
def test_smoke_preset_runs_end_to_end_with_snakemake(tmp_path):
    # the README's command, exactly, in a fresh copy of the repository with its own config.yaml: only the
    # preset's studies may run (tests/test_readme_commands.py counts the jobs)
    copy_repository(tmp_path)
    snakemake(tmp_path, "--cores", "2", configfile="presets/paper-smoke.yaml", timeout=1200)
    # one folder per study, beside the run's summary (results/summary-paper-smoke.md, .json) and comparisons
    assert sorted(p.name for p in (tmp_path / "results").iterdir() if p.name != "comparisons") == \
        sorted([*load_config(SMOKE)["studies"], "summary-paper-smoke.json", "summary-paper-smoke.md"])
    config = load_config(SMOKE)
    for key in iter_runs(config):
        trace = read_trace(tmp_path / key.trace_path)
        attrs, points = trace["attrs"], trace["points"]
        assert attrs["steps_total"] > 0 and len(points["step"]) >= 2, key
        study = config["studies"][key.study]
        if study["model"]["name"] == "lstm":
            assert "test_perplexity" in points, key
        if study["model"]["name"] == "drn_d_22":
            assert "test_miou" in points, key
        micro = study["micro_batch"]
        assert attrs["ghost_batch_size"] == (min(micro, key.batch_size) if micro else key.batch_size), key
    for study in config["studies"]:
        assert (tmp_path / "results" / study / "cube.nc").exists(), study
        assert (tmp_path / "results" / study / "speedup.csv").exists(), study
    for group in config["comparisons"]:
        assert (tmp_path / "results" / "comparisons" / group / "speedup.png").exists(), group
