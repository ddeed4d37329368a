"""CPU cost of the noise estimator of issue 22 (batch_big auto, draws auto, exact values) on the default
config's noise studies, per evaluation point, packed as the default run packs them.

Trains one pack of a study at one batch size (its fixed strategies together, every seed, as config.yaml's
`pack: {strategies: together}`) with noise_scale as configured, with the exact values off, and with noise
off, and prints the wall time, the number of evaluation points and the noise cost per point (and per run
and point), with the big batches and draws used. One thread.

    PYTHONPATH=src python benchmarks/bench_noise_estimator.py digits_mlp 128 [seeds]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from batchscale.engine.pack import train_pack
from batchscale.spec.runs import RunKey, run_config
from batchscale.validate import load_config


def timed(study: str, batch_size: int, seeds: int, noise: dict):
    config = load_config("config.yaml")
    spec = config["studies"][study]
    spec["noise_scale"].update(noise)
    fixed = [s for s in spec["strategies"] if s != "tuned"]
    runs = [run_config(config, RunKey(study, s, batch_size, seed)) for s in fixed for seed in spec["seeds"][:seeds]]
    began = time.perf_counter()
    results = train_pack(runs, progress=False)
    return time.perf_counter() - began, results


def main(study: str, batch_size: int, seeds: int) -> None:
    torch.set_num_threads(1)
    off, _ = timed(study, batch_size, seeds, {"enabled": False})
    two, _ = timed(study, batch_size, seeds, {"exact_max_params_times_examples": 0})
    on, results = timed(study, batch_size, seeds, {})
    points, runs = len(results[0].points["step"]), len(results)
    print(f"{study} bs{batch_size}: {runs} runs, {points} evaluation points; noise off {off:.2f} s, "
          f"two-batch only {two:.2f} s, two-batch + exact {on:.2f} s")
    print(f"noise cost per evaluation point (whole pack): two-batch {(two - off) / points:.3f} s, "
          f"exact {(on - two) / points:.3f} s, both {(on - off) / points:.3f} s "
          f"({(on - off) / points / runs:.3f} s per run and point)")
    bigs = np.concatenate([r.points["noise_batch_big"] for r in results])
    draws = np.concatenate([r.points["noise_draws"] for r in results])
    print(f"batch_big used: {dict(zip(*np.unique(bigs, return_counts=True)))}; draws: mean {draws.mean():.1f}, "
          f"max {draws.max():.0f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 99)
