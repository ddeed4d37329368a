"""GPU throughput of the training engine: ResNet-34 on CIFAR-shaped synthetic data.

    PYTHONPATH=src python benchmarks/bench_gpu.py                 # batch 128, 1024, 8192 (8 x 1024 accumulated)
    PYTHONPATH=src python benchmarks/bench_gpu.py --batch-sizes 256 4096 --micro-batch 512 --peak-tflops 989

For each batch size it trains ResNet-34 (width 1, 10 classes, 3x32x32) on `synthetic_images` with the
settings of presets/paper.yaml (bf16 autocast, channels_last, cuDNN benchmark, SGD with momentum and weight
decay, micro-batches of `--micro-batch` above that size) and reports:

- the per-epoch time of the engine's training step (`batch_gradient` + the packed SGD step, the
  loop body of `train_pack`, for a pack of one), timed over one full epoch of `--n-train` examples after `--warmup-steps`
  untimed steps (cuDNN autotuning, allocator warm-up);
- the achieved TFLOP/s: 3 x forward FLOPs per example (batchscale.models.flops: 2 x MACs of the convs and
  the classifier, 2.32 GFLOPs for ResNet-34) x examples / time, and its ratio to the card's dense bf16 peak;
- the per-epoch time of a whole `train_run` of one epoch (unless --no-train-run): the same steps plus the
  evaluations on the log-spaced grid and the end-of-run linear-approximation measurement;
- the peak GPU memory of the timed epoch, which is what `micro_batch` must keep under the card's memory;
- packed: `--packed-runs` ResNet-18 runs at batch `--packed-batch` trained as one pack (one vmapped step)
  against the same runs one after another, in examples per second.

Without CUDA it says so and exits with status 0. Self-contained: no Snakemake, no data files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

# dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 6000 Ada", 364.0),
    ("RTX A6000", 155.0),
    ("V100", 0.0),  # no bf16 tensor cores
]


def card_peak(name: str) -> float | None:
    """The dense bf16 peak of a card from its CUDA device name (first matching entry), or None."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return peak or None
    return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024, 8192])
    parser.add_argument("--micro-batch", type=int, default=1024,
                        help="largest batch in one forward/backward (presets/paper.yaml: 1024)")
    parser.add_argument("--n-train", type=int, default=50_000, help="examples per epoch (CIFAR-10: 50,000)")
    parser.add_argument("--n-test", type=int, default=10_000, help="test examples evaluated by train_run")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before the timed epoch")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the card's bf16 peak")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--no-train-run", action="store_true", help="skip the whole-train_run column")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--width", type=float, default=1.0, help="ResNet-34 width multiplier (1 = the paper's)")
    parser.add_argument("--packed-runs", type=int, default=8, help="runs of the packed case (0: skip it)")
    parser.add_argument("--packed-batch", type=int, default=128)
    parser.add_argument("--packed-steps", type=int, default=50, help="timed steps of each run in the packed case")
    parser.add_argument("--cpu-check", action="store_true",
                        help="run on the CPU anyway (to test this script; numbers mean nothing)")
    return parser.parse_args(argv)


def make_run(batch_size: int, args) -> dict:
    """A resolved run config for one batch size, through the real config machinery."""
    from batchscale.spec.runs import run_config, RunKey
    from batchscale.validate import load_config

    micro = args.micro_batch if batch_size > args.micro_batch else None
    config = load_config({"studies": {"bench": {
        "dataset": {"name": "synthetic_images", "options": {"n_train": args.n_train, "n_test": args.n_test}},
        "model": {"name": "resnet34", "options": {"width": args.width}},
        "optimizer": {"momentum": 0.9, "weight_decay": 5e-4},
        "eta0": 0.1, "base_batch": batch_size, "epochs": 1,
        "batch_sizes": [batch_size // 2, batch_size],  # a study compares at least two; only batch_size is timed
        "micro_batch": micro, "device": "cpu" if args.cpu_check else "cuda", "precision": args.precision,
        "channels_last": not args.no_channels_last, "evaluation": {"batch_size": 1024},
    }}})
    return run_config(config, RunKey("bench", "blr", batch_size, 0))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(runs: list[dict], splits, args, steps: int | None = None) -> dict:
    """Warm up, then time `steps` (default: one full epoch) of the engine's packed training step for `runs`
    (a pack; one run is a pack of one); returns seconds and peak memory."""
    from batchscale.engine.optim import build_optimizer
    from batchscale.engine.packed_model import build_packed_model
    from batchscale.engine.runtime import DeviceData, autocast_factory
    from batchscale.engine.state import RunState
    from batchscale.engine.step import batch_gradient

    run = runs[0]
    device = torch.device(run["device"])
    torch.backends.cudnn.benchmark = True
    autocast = autocast_factory(device, run["precision"])
    data = DeviceData(splits, device, run["dataset"].get("augment", False), run["seed"])
    model = build_packed_model(runs, data.spec, device, channels_last=run["channels_last"] and device.type == "cuda")
    model.vectorised = len(runs) > 1
    optimizer = build_optimizer(runs, model.params)
    m, n = run["batch_size"], data.x_train.shape[0]
    steps = steps or n // m
    states = [RunState.create(r, n, device) for r in runs]
    ids = list(range(len(runs)))
    lr = torch.full((len(runs),), 0.01, device=device)
    active = torch.ones(len(runs), dtype=torch.bool, device=device)
    generator = torch.Generator().manual_seed(0)

    def step(index):
        losses, grads = batch_gradient(model, data, index.expand(len(runs), -1), states, ids, model.params,
                                       model.buffers, run["micro_batch"], autocast)
        optimizer.step(grads, lr, active)
        return losses

    batches = n // m
    perm = torch.randperm(n, generator=generator).to(device)
    for i in range(args.warmup_steps):
        step(perm[(i % batches) * m:(i % batches + 1) * m])
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    perm = torch.randperm(n, generator=generator).to(device)
    began = time.perf_counter()
    for i in range(steps):
        loss = step(perm[(i % batches) * m:(i % batches + 1) * m])
    synchronize(device)
    seconds = time.perf_counter() - began
    result = {"steps": steps, "seconds": seconds, "final_loss": float(loss[0]),
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0}
    del model, optimizer, data
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def packed_case(splits, args) -> None:
    """`--packed-runs` ResNet-18 runs (seeds) at batch `--packed-batch`: one pack against one after another."""
    runs = []
    for seed in range(args.packed_runs):
        run = make_run(args.packed_batch, args)
        run.update(seed=seed, model={"name": "resnet18", "options": {"width": args.width}})
        runs.append(run)
    packed = time_steps(runs, splits, args, steps=args.packed_steps)
    alone = [time_steps([run], splits, args, steps=args.packed_steps) for run in runs]
    examples = args.packed_steps * args.packed_batch * len(runs)
    packed_rate = examples / packed["seconds"]
    alone_rate = examples / sum(a["seconds"] for a in alone)
    print(f"\npacked: {len(runs)} ResNet-18 runs at batch {args.packed_batch}, {args.packed_steps} steps each: "
          f"{packed_rate:,.0f} examples/s packed, {alone_rate:,.0f} one after another "
          f"({packed_rate / alone_rate:.2f}x); peak memory {packed['peak_memory_gib']:.1f} GiB packed")


def time_train_run(run: dict, splits) -> dict:
    from batchscale.engine.pack import train_run

    device = torch.device(run["device"])
    synchronize(device)
    began = time.perf_counter()
    result = train_run(run, threads=torch.get_num_threads(), progress=False, splits=splits)
    synchronize(device)
    return {"seconds": time.perf_counter() - began, "eval_seconds": result.eval_seconds, "status": result.status}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_check:
        print("bench_gpu: no CUDA GPU visible to torch; this benchmark measures GPU throughput, nothing to do.")
        return 0
    from batchscale.data import DataSpec, load_dataset
    from batchscale.models import build_model
    from batchscale.models.flops import forward_flops_per_example

    name = "CPU (--cpu-check)" if args.cpu_check else torch.cuda.get_device_name(0)
    peak = args.peak_tflops or (None if args.cpu_check else card_peak(name))
    spec = DataSpec("classification", (3, 32, 32), 10)
    fwd = forward_flops_per_example(build_model({"name": "resnet34", "options": {"width": args.width}}, spec), spec)
    total_memory = 0.0 if args.cpu_check else torch.cuda.get_device_properties(0).total_memory / 2**30
    print(f"device: {name} ({total_memory:.0f} GiB), bf16 dense peak "
          f"{f'{peak:g} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}; torch {torch.__version__}")
    print(f"ResNet-34 (CIFAR stem, width {args.width:g}), 3x32x32, 10 classes: {fwd / 1e9:.3f} GFLOPs forward per example, "
          f"training = 3 x forward; precision {args.precision}, channels_last {not args.no_channels_last}, "
          f"{args.n_train:,} examples per epoch")
    print("building synthetic_images ...", file=sys.stderr)
    splits = load_dataset({"name": "synthetic_images", "options": {"n_train": args.n_train, "n_test": args.n_test}})

    rows = []
    for m in args.batch_sizes:
        if m > args.n_train:
            print(f"skipping batch {m}: larger than --n-train {args.n_train}", file=sys.stderr)
            continue
        run = make_run(m, args)
        timed = time_steps([run], splits, args)
        examples = timed["steps"] * m
        tflops = 3 * fwd * examples / timed["seconds"] / 1e12
        epoch = timed["seconds"] * args.n_train / examples  # the dropped partial batch is not trained
        row = {"batch_size": m, "micro_batch": run["micro_batch"] or m, "steps_per_epoch": timed["steps"],
               "epoch_seconds": epoch, "images_per_second": examples / timed["seconds"], "tflops": tflops,
               "fraction_of_peak": tflops / peak if peak else None, "peak_memory_gib": timed["peak_memory_gib"]}
        if not args.no_train_run:
            whole = time_train_run(run, splits)
            row["train_run_epoch_seconds"] = whole["seconds"]
            row["train_run_eval_seconds"] = whole["eval_seconds"]
        rows.append(row)
        print(f"  batch {m}: {epoch:.2f} s/epoch, {tflops:.0f} TFLOP/s", file=sys.stderr)

    if args.packed_runs:
        packed_case(splits, args)
    if not rows:
        return 0
    base = rows[0]
    header = (f"{'batch':>6} {'micro':>6} {'steps/ep':>8} {'s/epoch':>8} {'img/s':>9} {'TFLOP/s':>8} "
              f"{'of peak':>8} {'vs first':>8} {'peak GiB':>9}")
    if not args.no_train_run:
        header += f" {'train_run s/ep':>15} {'(eval s)':>9}"
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        of_peak = "-" if row["fraction_of_peak"] is None else f"{row['fraction_of_peak']:.1%}"
        line = (f"{row['batch_size']:>6} {row['micro_batch']:>6} {row['steps_per_epoch']:>8} "
                f"{row['epoch_seconds']:>8.2f} {row['images_per_second']:>9,.0f} {row['tflops']:>8.1f} "
                f"{of_peak:>8} "
                f"{base['epoch_seconds'] / row['epoch_seconds']:>7.2f}x {row['peak_memory_gib']:>9.1f}")
        if not args.no_train_run:
            line += f" {row['train_run_epoch_seconds']:>15.2f} {row['train_run_eval_seconds']:>9.2f}"
        print(line)
    print()
    print("s/epoch: training steps only (forward, backward, SGD), one epoch after warm-up; 'vs first': epoch-time "
          f"speedup over batch {base['batch_size']}; TFLOP/s = 3 x forward FLOPs x images / s; peak GiB: "
          "torch.cuda.max_memory_allocated during the timed epoch. train_run: one whole 1-epoch run "
          "(data on the device, evaluation grid, linear-approximation measurement), model built fresh.")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": name, "peak_tflops": peak, "forward_flops": fwd, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
