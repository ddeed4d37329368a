"""Overhead of tracing the gradient noise scale (issue 14) on the default digits MLP pack.

Trains the same pack (digits MLP 64-128-10, lsr, 2 seeds, 10 epochs, 10 evaluation points per decade,
the whole 1437-digit training set as the evaluation subset) with noise_scale off, with the two-batch
estimates only, and with the exact per-example values too, and prints each wall time and its ratio to the
run without, measured in this process. One thread.

    PYTHONPATH=src python benchmarks/bench_noise_overhead.py [batch sizes...]
"""

from __future__ import annotations

import sys
import time

import torch

from batchscale.spec.runs import run_config, RunKey
from batchscale.validate import load_config
from batchscale.engine.pack import train_pack

STUDY = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [128]}}, "eta0": 0.01,
         "base_batch": 4, "optimizer": {"momentum": 0.9}, "strategies": ["lsr"], "warmup_epochs": 2, "epochs": 10,
         "batch_sizes": [4, 128], "seeds": [0, 1], "device": "cpu",
         "evaluation": {"points_per_decade": 10, "train_subset": 1437}}
SETTINGS = {"off": {"enabled": False}, "two-batch only": {"enabled": True, "exact_max_params_times_examples": 0},
            "two-batch + exact": {"enabled": True}}


def seconds(batch_size: int, noise: dict) -> float:
    config = load_config({"studies": {"bench": {**STUDY, "noise_scale": noise}}})
    runs = [run_config(config, RunKey("bench", "lsr", batch_size, seed)) for seed in (0, 1)]
    began = time.perf_counter()
    train_pack(runs, progress=False)
    return time.perf_counter() - began


def main(sizes) -> None:
    torch.set_num_threads(1)
    for size in sizes:
        base = seconds(size, SETTINGS["off"])
        print(f"batch {size}: noise off {base:.2f} s")
        for name, noise in list(SETTINGS.items())[1:]:
            took = seconds(size, noise)
            print(f"batch {size}: {name} {took:.2f} s, x{took / base:.2f} of off")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [4, 32, 128])
