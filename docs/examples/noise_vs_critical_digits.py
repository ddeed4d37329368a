"""B_simple at the loss target beside the critical batch measured from a k(m) grid, on the digits MLP.

A stand-in until the engine traces the noise scale: the grid (one strategy, one seed, m = 4 ... 1024) is
trained with the prototype `batchscale.branching_run.train_base` (the engine's loop in miniature: seeded
randperm epochs, SGD with momentum from the engine), evaluated on the engine's shared log-spaced grid, and
analysed with the functions the analysis rule will call (measurements, analysis.noise). Run from the
repository root (about a minute on one thread):

    PYTHONPATH=src python docs/examples/noise_vs_critical_digits.py [figure.png]
"""

import sys

import numpy as np
import pandas as pd
import torch

from batchscale import branching_run as brun
from batchscale import noise
from batchscale.analysis import measurements as ms
from batchscale.analysis import noise as an
from batchscale.engine.grid import evaluation_steps

torch.set_num_threads(1)
RUN = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [128]}}, "seed": 0,
       "device": "cpu", "evaluation": {"train_subset": 1437, "batch_size": 1437},
       "optimizer": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0}}
BATCH_SIZES = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
BASE_BATCH, ETA0, EPOCHS, POINTS_PER_DECADE = 4, 0.01, 60, 10
SMALL, BIG, DRAWS, WINDOW = 16, 256, 4, 3


def srsr_lr(batch_size):
    return ETA0 * (batch_size / BASE_BATCH) ** 0.5


def trace_run(setup, batch_size):
    n = setup.train_x.shape[0]
    total = EPOCHS * (n // batch_size)
    points = set(evaluation_steps(POINTS_PER_DECADE, total))
    x = setup.prepare(setup.eval_x, False)
    generator = torch.Generator().manual_seed(6700417)
    rows = []

    def record(step, model):
        if step not in points:
            return
        model.eval()
        loss_fn, params = noise.functional_loss(model, lambda out, y: setup.loss_sum(out, y) / setup.target_count(y))
        two = noise.two_batch_noise(loss_fn, params, x, setup.eval_y, SMALL, BIG, generator, draws=DRAWS)
        exact = noise.exact_noise(loss_fn, params, x, setup.eval_y)
        rows.append({"step": step, "train_loss": brun.eval_loss(setup, model), "noise_g2": two.g2,
                     "noise_trace_sigma": two.trace_sigma, "noise_g2_exact": exact.g2,
                     "noise_trace_sigma_exact": exact.trace_sigma})
        model.train()

    brun.train_base(setup, batch_size, srsr_lr(batch_size), total, [], seed=0, on_step=record)
    return pd.DataFrame(rows).assign(batch_size=batch_size)


def cube_from(frames):
    table = pd.concat(frames).assign(strategy="srsr", seed=0)
    table["examples_seen"] = table["step"] * table["batch_size"]
    return table.set_index(["strategy", "batch_size", "seed", "step"]).to_xarray()


def main():
    setup = brun.setup_from_run(RUN)
    cube = cube_from([trace_run(setup, m) for m in BATCH_SIZES])
    largest = cube["train_loss"].sel(batch_size=BATCH_SIZES[-1]).squeeze()
    eps = ms.threshold_from_rule(ms.resample_uniform_in_steps(cube["step"].values, largest.values),
                                 ms.LOWER_QUARTILE)
    k = ms.k_per_run(cube["train_loss"], eps)
    fit = ms.fit_critical_batch(BATCH_SIZES, k.sel(strategy="srsr", seed=0).values)
    critical = pd.DataFrame([{"strategy": "srsr", "metric": "train_loss", "B_crit": fit["B_crit"],
                              "B_crit_low": np.nan, "B_crit_high": np.nan, "B_crit_overhead": np.nan}])
    over = an.b_simple_over_training(an.noise_points(cube), WINDOW)
    at = an.b_simple_at_threshold(over, k.to_dataframe().reset_index())
    table = an.noise_vs_critical(at, critical)
    pd.set_option("display.width", 200)
    print(f"eps = {eps:.4f} nats (lower quartile of the largest batch's train loss); fit: {fit}")
    print(table[["batch_size", "k_mean_steps", "b_simple_at_eps", "b_simple_exact_at_eps", "B_crit",
                 "ratio_B_crit_over_B_simple"]].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if len(sys.argv) > 1:
        from matplotlib.figure import Figure

        from batchscale.figures.noise import plot_noise_scale
        figure = Figure(figsize=(7, 4.5))
        ax = figure.add_subplot()
        plot_noise_scale(ax, over, critical, x="examples_seen")
        ax.legend(fontsize=6, ncols=2)
        figure.savefig(sys.argv[1], dpi=110)


if __name__ == "__main__":
    main()
