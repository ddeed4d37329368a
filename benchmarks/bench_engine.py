"""Engine speed against baselines measured in the same run (this machine is shared and noisy).

    python benchmarks/bench_engine.py            (about two minutes on 2 cores)

Prints, as ratios:
1. engine step time vs the usual tutorial loop (torch.utils.data.DataLoader over a TensorDataset,
   torch.optim.SGD) for the default MLP on digits at batch 8, 32 and 256, same steps, same threads;
2. achieved GFLOP/s of the MLP training step at batch 1024, as a fraction of plain fp32 matmuls of the
   same shapes (the ceiling for this model) and of a large 1024^3 matmul, all measured here;
3. evaluation time as a share of training-run time for the default study's MLP runs (one seed and
   strategy per batch size, the default evaluation settings);
4. one thread against two for a batch-8 step (why the train rule's threads depend on the batch size).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from batchscale.spec.runs import run_config, RunKey
from batchscale.validate import load_config
from batchscale.data import load_dataset  # noqa: E402
from batchscale.engine.pack import train_run  # noqa: E402
from batchscale.models import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEPS = 1500
REPEATS = 3


def default_run(batch_size: int, strategy: str = "blr", study: str = "digits_mlp") -> dict:
    config = load_config(REPO / "config.yaml")
    return run_config(config, RunKey(study, strategy, batch_size, 0))


def engine_seconds_per_step(batch_size: int, steps: int, threads: int, splits) -> float:
    run = default_run(batch_size)
    run.update(max_steps=steps, epochs=10_000, evaluation=dict(run["evaluation"], points_per_decade=1))
    result = train_run(run, threads=threads, progress=False, splits=splits)
    # wall_seconds also holds set-up and the few evaluations; take them out
    return (result.points["wall_time"][-1] - result.points["wall_time"][0] - result.eval_seconds) / steps


def dataloader_seconds_per_step(batch_size: int, steps: int, threads: int, splits) -> float:
    """The tutorial loop: DataLoader(shuffle=True) -> zero_grad -> forward -> loss -> backward -> step."""
    torch.set_num_threads(threads)
    run = default_run(batch_size)
    torch.manual_seed(0)
    model = build_model(run["model"], splits.spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=run["lr_peak"], momentum=run["optimizer"]["momentum"])
    dataset = torch.utils.data.TensorDataset(splits.train_x, splits.train_y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    done = 0
    start = None
    while done < steps + 10:
        for x, y in loader:
            if done == 10:
                start = time.perf_counter()  # after warm-up, as the engine's clock starts after set-up
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps + 10:
                break
    return (time.perf_counter() - start) / steps


def matmul_gflops(shapes: list[tuple[int, int, int]], repeats: int = 200) -> float:
    """GFLOP/s of plain fp32 matmuls (m x k) @ (k x n), summed over `shapes`."""
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    for a, b in mats:
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in mats:
            a @ b
    return flops * repeats / (time.perf_counter() - start) / 1e9


def mlp_step_flops(batch_size: int, layers: list[tuple[int, int]]) -> float:
    """Forward 2mkn per layer; backward: weight gradients 2mkn per layer, input gradients 2mkn per
    layer except the first (the data needs no gradient)."""
    per_layer = [2 * batch_size * k * n for k, n in layers]
    return sum(per_layer) * 2 + sum(per_layer[1:])


def best(function, *args) -> float:
    return min(function(*args) for _ in range(REPEATS))


def main() -> None:
    splits = load_dataset({"name": "digits"})
    threads = {8: 1, 32: 1, 256: 2}  # as the train rule assigns them (single_thread_below: 256)
    print("1. engine vs DataLoader tutorial loop, MLP 64-128-10 on digits "
          f"({STEPS} steps, best of {REPEATS}):")
    print(f"   {'batch':>6} {'threads':>7} {'engine ms':>10} {'DataLoader ms':>14} {'speed-up':>9}")
    for batch, n_threads in threads.items():
        ours = best(engine_seconds_per_step, batch, STEPS, n_threads, splits)
        theirs = best(dataloader_seconds_per_step, batch, STEPS, n_threads, splits)
        print(f"   {batch:>6} {n_threads:>7} {ours * 1e3:>10.3f} {theirs * 1e3:>14.3f} {theirs / ours:>8.2f}x")

    batch = 1024
    layers = [(64, 128), (128, 10)]
    shapes = [(batch, 64, 128), (batch, 128, 10), (batch, 10, 128), (64, batch, 128), (128, batch, 10)]
    print(f"\n2. MLP training step at batch {batch} against plain fp32 matmuls at the same thread count:")
    for n_threads in (2, 1):
        step = best(engine_seconds_per_step, batch, 300, n_threads, splits)
        achieved = mlp_step_flops(batch, layers) / step / 1e9
        torch.set_num_threads(n_threads)
        same_shapes = matmul_gflops(shapes)
        large = matmul_gflops([(1024, 1024, 1024)], repeats=20)
        print(f"   {n_threads} thread(s): step {step * 1e3:.3f} ms = {achieved:.1f} GFLOP/s; matmuls of the step's "
              f"shapes {same_shapes:.1f} GFLOP/s -> {achieved / same_shapes:.0%}; a 1024^3 matmul "
              f"{large:.1f} GFLOP/s -> {achieved / large:.0%}")

    total_wall = total_eval = 0.0
    for batch in load_config(REPO / "config.yaml")["studies"]["digits_mlp"]["batch_sizes"]:
        n_threads = 1 if batch < 256 else 2
        result = train_run(default_run(batch), threads=n_threads, progress=False, splits=splits)
        total_wall += result.wall_seconds
        total_eval += result.eval_seconds
    print(f"\n3. evaluation share of the default study's MLP runs (blr, seed 0, every batch size): "
          f"{total_eval:.1f} s of {total_wall:.1f} s = {total_eval / total_wall:.1%}")

    one = best(engine_seconds_per_step, 8, STEPS, 1, splits)
    two = best(engine_seconds_per_step, 8, STEPS, 2, splits)
    print(f"\n4. batch-8 step: 1 thread {one * 1e3:.3f} ms, 2 threads {two * 1e3:.3f} ms "
          f"(2 threads take {two / one:.2f}x as long)")
    print(f"\n(torch {torch.__version__})")


if __name__ == "__main__":
    main()
