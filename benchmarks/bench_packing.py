"""Packed training against the same runs one after another in one process (this machine is shared: noisy).

    python benchmarks/bench_packing.py            (a few minutes on 2 cores)
    python benchmarks/bench_packing.py --quick    (fewer steps)

For the MLP and the small CNN of the default config on digits, at batch 4, 32 and 256: 16 runs (seeds
0-15, strategies blr and srsr alternating) trained
- packed: one `train_pack` of the 16 runs (one vectorised step for all);
- alone: 16 `train_pack` calls of one run each, one after another (the engine's own single-run path);
- plain: 16 plain PyTorch loops one after another (module forward, backward, torch.optim.SGD step: the
  engine before packing, without evaluation).
Training time only (evaluation, the same work in each case, is subtracted; the linear-approximation
measurement is off). Prints microseconds per run-step and the ratios alone/packed and plain/packed, on one
thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from batchscale.spec.runs import run_config, RunKey
from batchscale.validate import load_config
from batchscale.data import load_dataset  # noqa: E402
from batchscale.engine.pack import train_pack  # noqa: E402
from batchscale.models import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNS = 16
STUDIES = {"mlp": "digits_mlp", "cnn": "digits_cnn"}
STEPS = {("mlp", 4): 600, ("mlp", 32): 400, ("mlp", 256): 100, ("cnn", 4): 200, ("cnn", 32): 60, ("cnn", 256): 15}


def pack_runs(study: str, batch_size: int, steps: int) -> list[dict]:
    config = load_config(REPO / "config.yaml")
    runs = []
    for seed in range(RUNS):
        run = run_config(config, RunKey(study, ("blr", "srsr")[seed % 2], batch_size, seed))
        run.update(max_steps=steps, epochs=10_000,
                   evaluation=dict(run["evaluation"], points_per_decade=1, linear_approx=False))
        runs.append(run)
    return runs


def packed_seconds(runs, splits) -> float:
    results = train_pack(runs, progress=False, splits=splits)
    return results[0].wall_seconds - results[0].eval_seconds


def alone_seconds(runs, splits) -> float:
    total = 0.0
    for run in runs:
        result = train_pack([run], progress=False, splits=splits)[0]
        total += result.wall_seconds - result.eval_seconds
    return total


def plain_seconds(runs, splits) -> float:
    """The usual loop per run: forward, cross-entropy, backward, torch.optim.SGD (foreach) step."""
    x, y = splits.train_x, splits.train_y
    n = x.shape[0]
    total = 0.0
    for run in runs:
        torch.manual_seed(run["seed"])
        model = build_model(run["model"], splits.spec)
        optimizer = torch.optim.SGD(model.parameters(), lr=run["lr_peak"], momentum=run["optimizer"]["momentum"],
                                    foreach=True)
        generator = torch.Generator().manual_seed(run["seed"])
        m = run["batch_size"]
        began = time.perf_counter()
        perm, position = torch.randperm(n, generator=generator), 0
        for _ in range(run["max_steps"]):
            if position + m > n:
                perm, position = torch.randperm(n, generator=generator), 0
            index = perm[position:position + m]
            position += m
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
        total += time.perf_counter() - began
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    splits = load_dataset({"name": "digits"})
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # pay its one-off import before timing
    print(f"{RUNS} runs per case, one thread; microseconds per run-step (training only)")
    print(f"{'model':5} {'batch':>5} {'steps':>5} {'packed':>8} {'alone':>8} {'plain':>8} {'alone/packed':>13} "
          f"{'plain/packed':>13}")
    for (model, batch_size), steps in STEPS.items():
        steps = max(steps // 4, 5) if args.quick else steps
        runs = pack_runs(STUDIES[model], batch_size, steps)
        packed_seconds(runs[:2], splits)  # warm-up: first vmap trace, allocator
        per_step = RUNS * steps / 1e6
        packed = packed_seconds(runs, splits) / per_step
        alone = alone_seconds(runs, splits) / per_step
        plain = plain_seconds(runs, splits) / per_step
        print(f"{model:5} {batch_size:5d} {steps:5d} {packed:8.0f} {alone:8.0f} {plain:8.0f} {alone / packed:12.1f}x "
              f"{plain / packed:12.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
