"""The prediction runs of a study (study key `predict`): which runs, where their traces live, each run's
config, and the budget check against the grid. No torch, no data: the config alone decides them.

A prediction run is an ordinary training run (the engine and trace contract of the grid) at one small batch
size, a constant learning rate and the noise scale traced; its strategy is recorded as PREDICT_STRATEGY,
which no rule of the grid reads. Its trace lives under results/{study}/predict/traces/ (manifest
PREDICT_TRACE_PATH), so the grid's cube and analysis never see it.
"""

from __future__ import annotations

from batchscale.errors import ConfigError
from batchscale.spec.manifest import PREDICT_TRACE_PATH
from batchscale.spec.runs import run_config, RunKey
from batchscale.spec.strategies import TUNED, study_hyperparameters

PREDICT_STRATEGY = "predict"
# the fixed rule whose settings (optimizer, schedule, epochs) a prediction run starts from: a constant rate
BASE_RULE = "blr"


def predict_enabled(study: dict) -> bool:
    return bool(study.get("predict", {}).get("enabled"))


def predict_batch_size(study: dict) -> int:
    """The prediction runs' batch size (the study's base_batch when `predict.batch_size` is null)."""
    size = study["predict"].get("batch_size")
    return int(size if size is not None else study["base_batch"])


def predict_epochs(study: dict) -> int:
    epochs = study["predict"].get("epochs")
    return int(epochs if epochs is not None else study["epochs"])


def target_strategy(study: dict) -> str:
    """The strategy whose own eps is the target loss when `predict.target_loss` is null."""
    chosen = study["predict"].get("target_strategy")
    if chosen is not None:
        return chosen
    return TUNED if TUNED in study["strategies"] else study["strategies"][0]


def predict_trace_paths(study_name: str, study: dict) -> list[str]:
    size = predict_batch_size(study)
    return [PREDICT_TRACE_PATH.format(study=study_name, batch_size=size, seed=seed)
            for seed in study["predict"]["seeds"]]


def predict_noise(study: dict) -> dict:
    """The noise-scale settings of the prediction runs: the study's, with `predict.noise` over them, on."""
    noise = {**study["noise_scale"], **study["predict"].get("noise", {}), "enabled": True}
    return {k: v for k, v in noise.items() if k not in ("window", "tuned_trials")}  # neither changes a trace


def predict_run_config(config: dict, study_name: str, seed: int) -> dict:
    """The fully resolved config of one prediction run (the engine's run config, as the grid's)."""
    study = config["studies"][study_name]
    settings = study["predict"]
    size = predict_batch_size(study)
    run = run_config(config, RunKey(study_name, BASE_RULE, size, int(seed)))
    run.pop("warmup_steps", None)
    lr = float(settings["lr"] if settings.get("lr") is not None else study["eta0"])
    run.update({"strategy": PREDICT_STRATEGY, "eta0": lr, "lr_peak": lr, "warmup_epochs": 0,
                "epochs": predict_epochs(study), "noise_scale": predict_noise(study)})
    if settings.get("max_steps") is not None:
        cap = run["max_steps"]
        run["max_steps"] = int(settings["max_steps"]) if cap is None else min(int(cap), int(settings["max_steps"]))
    if settings.get("points_per_decade") is not None:
        run["evaluation"] = {**run["evaluation"], "points_per_decade": int(settings["points_per_decade"])}
    return run


def grid_run_epochs(study: dict, tuned_trials: int) -> float:
    """The grid's run-epochs: each run's epochs (its strategy's at its batch size: `longer` trains more),
    summed over the study's runs (`tuned_trials` runs per seed and batch size for tuned)."""
    total = 0.0
    for strategy in study["strategies"]:
        per_seed = tuned_trials if strategy == TUNED else 1
        for m in study["batch_sizes"]:
            epochs = study["epochs"] if strategy == TUNED else study_hyperparameters(study, strategy, m)["epochs"]
            total += float(epochs) * per_seed * len(study["seeds"])
    return total


def check_predict(prefix: str, study: dict, tuned_trials: int) -> None:
    """The `predict` block of a study: a noise key the study knows, a target strategy it runs, the budget."""
    settings = study["predict"]
    if not settings["enabled"]:
        return
    unknown = sorted(set(settings.get("noise", {})) - set(study["noise_scale"]) - {"enabled"})
    if unknown:
        raise ConfigError(f"config key {prefix}.predict.noise: {', '.join(unknown)} not a key of noise_scale; "
                          f"allowed: {', '.join(sorted(study['noise_scale']))}")
    if settings.get("target_loss") is None and target_strategy(study) not in study["strategies"]:
        raise ConfigError(f"config key {prefix}.predict.target_strategy: {settings['target_strategy']!r} is not run "
                          f"by the study; allowed values: {', '.join(study['strategies'])}")
    spent = len(settings["seeds"]) * predict_epochs(study)
    grid = grid_run_epochs(study, tuned_trials)
    if spent > settings["max_grid_fraction"] * grid:
        raise ConfigError(
            f"config key {prefix}.predict.epochs: {len(settings['seeds'])} seeds x {predict_epochs(study)} epochs "
            f"= {spent:g} run-epochs, {spent / grid:.1%} of the grid's {grid:g}, more than max_grid_fraction "
            f"({settings['max_grid_fraction']:g}); lower predict.epochs or predict.seeds")
