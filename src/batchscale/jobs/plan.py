"""`batchscale plan CONFIG`: what a config will cost, before anything runs.

For every study: the number of training jobs, the training steps and examples they process, and an
estimate of the compute (FLOPs, and GPU-hours at a stated sustained rate). Nothing is trained and no real
data is read: a user who has not downloaded CIFAR or Cityscapes yet can still see what the paper preset
costs.

How the numbers are counted:

- Config: validated exactly as `load_config` does (schema, defaults, semantic checks, dataset and model
  names, dataset options), except that the check that real data files exist is skipped.
- Dataset sizes: real datasets from their published sizes (`REAL_DATASETS`; the files are never opened),
  with the study's options (`train_examples`, SVHN `extra`, WikiText-2 `bptt`, Cityscapes `size` and
  `test_split`), then `fraction`, `max_examples` and `max_test_examples` applied as `load_dataset` does.
  `fraction` keeps round(fraction x n) examples; the real subset is stratified per class, so it can differ
  by up to one example per class (exact for CIFAR, whose classes are equal). Embedded and custom datasets
  are built (they are small and fast), so their sizes are exact.
- Steps of a run: floor(n / m) x epochs (the `longer` strategy's multiplied, capped epochs), capped at
  `max_steps`; exactly what `config.run_config` and the engine do.
- Forward FLOPs per example: `models.flops.forward_flops_per_example`, PyTorch's
  `torch.utils.flop_counter.FlopCounterMode` (2 x multiply-accumulates of every matrix product and
  convolution, attention included) on the model built with the study's options and data shape, on PyTorch's
  meta device (no memory, no arithmetic); a model that cannot run there (a custom layer without a meta
  kernel, `.item()`) is counted on the CPU. An example is an image, a window of `bptt` tokens, or a
  segmentation image.
- Training FLOPs: 3 x forward FLOPs per example x examples processed (forward + backward, the backward
  costing about twice the forward).
- Evaluation FLOPs: forward FLOPs x (training subset + test split) at every evaluation point of the run
  (its share of the study's log-spaced grid, step 0 and the final step included), plus the end-of-run
  linear-approximation measurement (one gradient of a batch of m: 3 x forward; two passes over the
  training subset: 1 x forward each).
- Runs: every strategy x batch size x seed, and for `tuned` every trial of its search as well; jobs: the
  pack jobs that train them (the runs of a study at one batch size, one strategy and one block of seeds and trials: jobs.packs).
- Every run is assumed to complete; a run that diverges stops early and costs less.
- GPU-hours: total FLOPs / (gpu_tflops x utilisation) / 3600. The default, 400 TFLOP/s x 0.4, is a
  sustained 160 TFLOP/s: roughly what bf16 training of these small-image networks reaches on an H100-class
  card (dense bf16 peak 989 TFLOP/s; `benchmarks/bench_gpu.py` measures it on your card).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch

from batchscale.engine.grid import evaluation_steps
from batchscale.errors import ConfigError
from batchscale.jobs.packs import all_packs
from batchscale.jobs.predict_packs import predict_packs
from batchscale.models import build_model
from batchscale.models.flops import forward_flops_per_example
from batchscale.spec.predict import predict_run_config
from batchscale.spec.runs import iter_runs, run_config
from batchscale.spec.strategies import TUNED
from batchscale.validate import DataShape, data_shape, load_config

@dataclass
class RunCost:
    study: str
    strategy: str
    batch_size: int
    seed: int
    epochs: int
    steps: int
    examples: int
    eval_points: int
    train_flops: float
    eval_flops: float
    problem: str | None = None  # why the run would fail (batch larger than the training split)

    @property
    def flops(self) -> float:
        return self.train_flops + self.eval_flops


@dataclass
class StudyPlan:
    name: str
    dataset: str
    model: str
    data: DataShape
    forward_flops: float
    runs: list[RunCost] = field(default_factory=list)
    packs: int = 0  # training jobs: one per pack of runs

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def trials(self) -> int:
        """Runs of the `tuned` search (trials x seeds x batch sizes)."""
        return sum(1 for r in self.runs if r.strategy == TUNED)

    @property
    def jobs(self) -> int:
        return self.packs

    @property
    def steps(self) -> int:
        return sum(r.steps for r in self.runs)

    @property
    def examples(self) -> int:
        return sum(r.examples for r in self.runs)

    @property
    def flops(self) -> float:
        return sum(r.flops for r in self.runs)

    @property
    def eval_flops(self) -> float:
        return sum(r.eval_flops for r in self.runs)


@dataclass
class Plan:
    config_path: str
    studies: list[StudyPlan]
    comparisons: int
    gpu_tflops: float
    utilisation: float

    @property
    def sustained_flops(self) -> float:
        return self.gpu_tflops * 1e12 * self.utilisation

    def gpu_hours(self, flops: float) -> float:
        return flops / self.sustained_flops / 3600.0


# --------------------------------------------------------------------------------------------------
# config without the data-file check


def load_config_without_data(source) -> dict:
    """`load_config` (schema, defaults, semantic and registry checks) minus the data-files-present check."""
    return load_config(source, check_data=False)


def forward_flops(model: dict, spec) -> float:
    """Forward FLOPs per example of the study's model, counted on the meta device (no memory, no arithmetic)."""
    try:
        with torch.device("meta"):
            net = build_model(model, spec)
        return forward_flops_per_example(net, spec)
    except (NotImplementedError, RuntimeError):  # no meta kernel, or `.item()` (no data): count on the CPU
        return forward_flops_per_example(build_model(model, spec), spec)


# --------------------------------------------------------------------------------------------------
# steps and FLOPs


def run_cost(run: dict, data: DataShape, fwd: float) -> RunCost:
    """Steps, examples and FLOPs of one run, counted as the engine will run it."""
    m, n = run["batch_size"], data.n_train
    base = dict(study=run["study"], strategy=run["strategy"], batch_size=m, seed=run["seed"], epochs=run["epochs"])
    if m > n:
        return RunCost(**base, steps=0, examples=0, eval_points=0, train_flops=0.0, eval_flops=0.0,
                       problem=f"batch size {m} is larger than the {n} training examples: the run would fail")
    steps = (n // m) * run["epochs"]
    if run.get("max_steps"):
        steps = min(steps, run["max_steps"])
    examples = steps * m
    points = len(evaluation_steps(run["evaluation"]["points_per_decade"], steps))
    subset = min(run["evaluation"]["train_subset"], n)
    evaluated = points * (subset + data.n_test) + 2 * subset  # grid evaluations + the two approx-error passes
    eval_flops = fwd * evaluated + 3.0 * fwd * min(m, n)  # + the approx-error batch gradient
    return RunCost(**base, steps=steps, examples=examples, eval_points=points, train_flops=3.0 * fwd * examples,
                   eval_flops=eval_flops)


def make_plan(source, gpu_tflops: float = 400.0, utilisation: float = 0.4) -> Plan:
    """Validate a config (without the data-file check) and count every study's jobs, steps and FLOPs."""
    if gpu_tflops <= 0:
        raise ConfigError(f"plan: --gpu-tflops must be > 0, got {gpu_tflops}")
    if not 0 < utilisation <= 1:
        raise ConfigError(f"plan: --utilisation must be in (0, 1], got {utilisation}")
    config = load_config_without_data(source)
    shapes: dict[str, DataShape] = {}
    flops: dict[str, float] = {}
    studies: dict[str, StudyPlan] = {}
    for name, study in config["studies"].items():
        data_key = json.dumps(study["dataset"], sort_keys=True)
        if data_key not in shapes:
            try:
                shapes[data_key] = data_shape(study["dataset"], config["data_root"], config["download"])
            except (ValueError, TypeError) as err:  # ConfigError (a ValueError) passes through unchanged
                if isinstance(err, ConfigError):
                    raise
                raise ConfigError(f"config key studies.{name}.dataset: {err}") from None
        data = shapes[data_key]
        model_key = json.dumps([study["model"], data.spec.__dict__], sort_keys=True, default=str)
        if model_key not in flops:
            try:
                flops[model_key] = forward_flops(study["model"], data.spec)
            except (ValueError, TypeError) as err:  # e.g. an LSTM on images: the run would fail the same way
                if isinstance(err, ConfigError):
                    raise
                raise ConfigError(f"config key studies.{name}.model: {err}") from None
        studies[name] = StudyPlan(name, study["dataset"]["name"], study["model"]["name"], data, flops[model_key])
    keys = list(iter_runs(config))
    for key in keys:
        plan = studies[key.study]
        plan.runs.append(run_cost(run_config(config, key), plan.data, plan.forward_flops))
    for pack in all_packs(config):
        studies[pack.study].packs += 1
    for pack in predict_packs(config):  # the short runs of `predict`, one job per study
        plan = studies[pack.study]
        plan.runs += [run_cost(predict_run_config(config, pack.study, seed), plan.data, plan.forward_flops)
                      for seed in pack.keys]
        plan.packs += 1
    return Plan(str(source) if isinstance(source, (str, Path)) else "(config)", list(studies.values()),
                len(config.get("comparisons", {})), gpu_tflops, utilisation)


# --------------------------------------------------------------------------------------------------
# output


def _count(value: float) -> str:
    """Compact count: 1,234 / 12.3 k / 4.56 M / 7.89 G."""
    for threshold, scale, suffix in ((1e9, 1e9, " G"), (1e6, 1e6, " M"), (1e4, 1e3, " k")):
        if value >= threshold:
            return f"{value / scale:.3g}{suffix}" if value / scale < 1000 else f"{value / scale:,.0f}{suffix}"
    return f"{int(value):,}"


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 0.01:
        return f"{value:.3g}"
    return f"{value:.1e}"


def format_plan(plan: Plan) -> str:
    header = ["study", "dataset", "model", "train n", "runs", "trials", "jobs", "steps", "examples", "GFLOP/ex", "PFLOP",
              "eval %", "GPU-h", "max GPU-h/job"]
    rows = []
    for s in plan.studies:
        longest = max((r.flops for r in s.runs), default=0.0)
        rows.append([s.name, s.dataset, s.model, f"{s.data.n_train:,}", str(s.n_runs), str(s.trials),
                     str(s.jobs), f"{s.steps:,}",
                     _count(s.examples), f"{s.forward_flops / 1e9:.3g}", _number(s.flops / 1e15),
                     f"{100 * s.eval_flops / s.flops:.1f}" if s.flops else "-",
                     _number(plan.gpu_hours(s.flops)), _number(plan.gpu_hours(longest))])
    total_flops = sum(s.flops for s in plan.studies)
    total_eval = sum(s.eval_flops for s in plan.studies)
    longest_all = max((r.flops for s in plan.studies for r in s.runs), default=0.0)
    rows.append(["total", "", "", "", str(sum(s.n_runs for s in plan.studies)),
                 str(sum(s.trials for s in plan.studies)), str(sum(s.jobs for s in plan.studies)), f"{sum(s.steps for s in plan.studies):,}",
                 _count(sum(s.examples for s in plan.studies)), "", _number(total_flops / 1e15),
                 f"{100 * total_eval / total_flops:.1f}" if total_flops else "-", _number(plan.gpu_hours(total_flops)),
                 _number(plan.gpu_hours(longest_all))])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    left = {0, 1, 2}

    def line(row):
        return "  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    jobs = sum(s.jobs for s in plan.studies)
    runs = sum(s.n_runs for s in plan.studies)
    trials = sum(s.trials for s in plan.studies)
    sustained = plan.gpu_tflops * plan.utilisation
    lines = [
        f"plan for {plan.config_path}: {len(plan.studies)} studies, {runs} training runs "
        f"({trials} of them trials of the tuned search) in {jobs} pack jobs "
        f"(+ per-study cube/analysis/figure jobs and {plan.comparisons} comparison(s), CPU, minutes each)",
        f"GPU-hours at {plan.gpu_tflops:g} TFLOP/s x {plan.utilisation:g} utilisation = {sustained:g} TFLOP/s "
        f"sustained (set with --gpu-tflops and --utilisation)",
        "",
        line(header),
        rule,
        *[line(row) for row in rows[:-1]],
        rule,
        line(rows[-1]),
    ]
    notes = (
        "train n: training examples after fraction and caps (language models: windows of bptt tokens). "
        "runs: strategies x batch sizes x seeds, trials x batch sizes x seeds for tuned (counted in trials); "
        "jobs: pack jobs, each training the runs of one batch size and strategy together (pack.seeds_per_pack, pack.trials_per_pack). "
        "steps: floor(n/m) x epochs, capped at max_steps, summed over the study's runs; examples: steps x m. "
        "FLOPs = 2 x multiply-accumulates of every matrix product and convolution, counted by "
        "torch.utils.flop_counter on one example (models/flops.py); training = "
        "3 x forward FLOPs x examples; evaluation (eval %) = forward passes over the training subset and the "
        "test split at every point of the run's log-spaced grid, plus the end-of-run linear-approximation "
        "measurement. Every run is assumed to complete (a diverged run stops early and costs less)."
    )
    lines += [""] + textwrap.wrap(notes, 110)
    by_source: dict[str, list[str]] = {}
    for s in plan.studies:
        names = by_source.setdefault(s.data.source, [])
        if s.dataset not in names:
            names.append(s.dataset)
    described = "; ".join(f"{source}: {', '.join(names)}" for source, names in sorted(by_source.items()))
    lines += textwrap.wrap(f"data sizes ({described}); real data files are not read.", 110)
    problems = [r for s in plan.studies for r in s.runs if r.problem]
    if problems:
        lines.append("")
        lines.append(f"WARNING: {len(problems)} run(s) cannot run as configured:")
        for r in problems:
            lines.append(f"  {r.study} {r.strategy} bs{r.batch_size} seed{r.seed}: {r.problem}")
    return "\n".join(lines)


def print_plan(config_path, gpu_tflops: float = 400.0, utilisation: float = 0.4) -> None:
    """Print the plan of a config (the `batchscale plan` command)."""
    print(format_plan(make_plan(config_path, gpu_tflops=gpu_tflops, utilisation=utilisation)))
