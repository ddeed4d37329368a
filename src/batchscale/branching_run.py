"""Local critical batch by branching from checkpoints (Merrill et al. 2025), over the packed engine's pieces.

There is one engine: the base run and every branch are a pack of one of `batchscale.engine` -- its model
(`build_packed_model`), data on the device (`DeviceData`, the fixed evaluation subset), step
(`pack.batch_gradient`: micro-batches, ghost BatchNorm, augmentation from the run's own stream), optimizer
(`optim.build_optimizer`, any registered one), learning rate (`RunState.lr`: strategy, warm-up, schedule) and
evaluation (`pack.evaluate`, eval mode). This module only drives them in a short loop that can stop at given
steps and start from saved weights, which `train_pack` (a whole run, resumable) does not expose:

- `train_base(run, count)`: the base run (a resolved run config of the study), with its weights, buffers,
  optimizer state, learning rate and examples seen saved at `checkpoint_steps(total, count)`; its batch order
  and initial weights are the engine's, so its trajectory is the one the study's trace of that run records.
- `train_branch(run, checkpoint, k, ...)`: from a checkpoint, training at batch k B with the constant rate
  `branch_lr(lr at the checkpoint, k, rule)` for Delta examples, momentum buffers kept (continued training),
  its own data order; the train loss on the evaluation subset at `evaluations` points over its last half.

The command line (`python -m batchscale.branching_run base|branch|table|figure`) is what the Snakemake rules of
workflow/rules/branching.smk call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from batchscale.analysis import branching as br
from batchscale.data import load_dataset
from batchscale.engine.optim import build_optimizer
from batchscale.engine.pack import batch_gradient, evaluate
from batchscale.engine.packed_model import build_packed_model
from batchscale.engine.state import RunState
from batchscale.engine.train import DeviceData, autocast_factory, pick_device

BRANCH_SEED_STRIDE = 1000  # branch j of checkpoint c: seed + 1000 c + j


class Engine:
    """A pack of one run on the engine's pieces: model, data, optimizer, schedule and evaluation subset."""

    def __init__(self, run: dict, splits=None):
        self.run = run
        self.device = pick_device(run.get("device", "cpu"))
        splits = splits if splits is not None else load_dataset(run["dataset"], run.get("data_root", "data"),
                                                                run.get("download", False))
        self.data = DeviceData(splits, self.device, run["dataset"].get("augment", False), run["seed"])
        self.n = self.data.x_train.shape[0]
        self.autocast = autocast_factory(self.device, run.get("precision", "fp32"))
        subset_generator = torch.Generator().manual_seed(run["dataset"].get("split_seed", 0) + 104729)
        subset = torch.randperm(self.n, generator=subset_generator)[: run["evaluation"]["train_subset"]]
        self.eval_x, self.eval_y = self.data.x_train[subset.to(self.device)], self.data.y_train[subset.to(self.device)]
        self.model = build_packed_model([run], self.data.spec, self.device)
        self.model.vectorised = False  # a pack of one trains run by run, as train_pack does on the CPU
        self.optimizer = build_optimizer([run], self.model.params)
        self.state = RunState.create(run, self.n, self.device)

    def train_loss(self) -> float:
        return evaluate(self.model, self.data, self.model.params, self.model.buffers, [0], self.eval_x, self.eval_y,
                        self.run["evaluation"]["batch_size"], self.autocast)[0]["loss"]

    def steps(self, batch_size: int, count: int, lr, generator: torch.Generator, on_step=None) -> None:
        """`count` updates at `batch_size`, rate `lr(step)` (0-based), batches as the engine draws them: a
        fresh randperm per epoch from `generator`, the last partial batch dropped."""
        perm, position = None, self.n
        active = torch.ones(1, dtype=torch.bool, device=self.device)
        for step in range(count):
            if position + batch_size > self.n:
                perm, position = torch.randperm(self.n, generator=generator), 0
            index = perm[None, position:position + batch_size].to(self.device)
            position += batch_size
            _, grads = batch_gradient(self.model, self.data, index, [self.state], [0], self.model.params,
                                      self.model.buffers, self.run.get("micro_batch"), self.autocast)
            if self.run["optimizer"].get("grad_clip"):
                from batchscale.engine.pack import clip_gradients
                grads = clip_gradients(grads, self.run["optimizer"]["grad_clip"])
            self.optimizer.step(grads, torch.tensor([lr(step)], device=self.device), active)
            if on_step is not None:
                on_step(step + 1)

    def snapshot(self) -> dict:
        return {"params": [p.clone() for p in self.model.params], "buffers": [b.clone() for b in self.model.buffers],
                "optimizer": _clone(self.optimizer.state_dict())}

    def restore(self, saved: dict, momentum: bool = True) -> None:
        with torch.no_grad():
            for target, value in zip(self.model.params + self.model.buffers, saved["params"] + saved["buffers"]):
                target.copy_(value)
        if momentum:
            self.optimizer.load_state_dict(_clone(saved["optimizer"]))


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


def train_base(run: dict, count: int, splits=None) -> dict:
    """The base run with checkpoints: {"run", "total_steps", "checkpoints": [{step, examples_seen, batch_size,
    lr (the rate of the update that made it), train_loss, params, buffers, optimizer}]} (plain tensors)."""
    engine = Engine(run, splits)
    total = engine.state.steps_total
    wanted = set(br.checkpoint_steps(total, count))
    torch.manual_seed(run["seed"])
    saved = []

    def on_step(step):
        if step in wanted:
            saved.append({"step": step, "examples_seen": step * run["batch_size"], "batch_size": run["batch_size"],
                          "lr": float(engine.state.lr(step - 1)), "train_loss": engine.train_loss(),
                          **engine.snapshot()})

    engine.steps(run["batch_size"], total, engine.state.lr, torch.Generator().manual_seed(run["seed"]), on_step)
    return {"run": run, "total_steps": total, "checkpoints": saved}


def branch_evaluation_steps(steps: int, evaluations: int) -> list[int]:
    """`evaluations` steps spread evenly over the last half of a branch (always ending at its last step)."""
    points = np.rint(np.linspace(max(1, steps / 2), steps, evaluations)).astype(int)
    return sorted({int(p) for p in points if p >= 1})


def train_branch(run: dict, checkpoint: dict, k: int, delta_examples: int, lr_rule: str, seed: int,
                 evaluations: int = 5, splits=None) -> dict:
    """One branch from `checkpoint` at batch k B (see the module docstring); returns its losses."""
    batch_size = int(k) * int(checkpoint["batch_size"])
    branch_run = {**run, "batch_size": batch_size, "seed": int(seed)}
    engine = Engine(branch_run, splits)
    if batch_size > engine.n:
        raise ValueError(f"branch batch {batch_size} exceeds the {engine.n} training examples")
    engine.restore(checkpoint)
    lr = br.branch_lr(checkpoint["lr"], k, lr_rule)
    steps = br.branch_steps(delta_examples, batch_size)
    eval_steps = branch_evaluation_steps(steps, evaluations)
    losses = []
    torch.manual_seed(seed)
    engine.steps(batch_size, steps, lambda _step: lr, torch.Generator().manual_seed(int(seed)),
                 lambda step: losses.append(engine.train_loss()) if step in eval_steps else None)
    return {"checkpoint_step": int(checkpoint["step"]), "checkpoint_examples": int(checkpoint["examples_seen"]),
            "base_batch": int(checkpoint["batch_size"]), "k": int(k), "batch_size": batch_size, "lr": lr,
            "steps": steps, "examples": steps * batch_size, "eval_steps": eval_steps,
            "eval_examples": [s * batch_size for s in eval_steps], "losses": losses}


def branch_checkpoint(run: dict, checkpoint: dict, index: int, ks, delta_examples: int, lr_rule: str,
                      evaluations: int = 5, splits=None) -> list[dict]:
    """Every branch k of checkpoint `index` (a pack of one each: their batch sizes differ)."""
    return [train_branch(run, checkpoint, k, delta_examples, lr_rule, run["seed"] + BRANCH_SEED_STRIDE * index + j,
                         evaluations, splits)
            for j, k in enumerate(sorted(int(k) for k in ks))]


def branch_table(rows: list[dict], smoothing: dict | None = None) -> pd.DataFrame:
    """Tidy (checkpoint_examples, base_batch, k, batch_size, lr, steps, examples, loss), loss smoothed,
    ready for `analysis.branching.local_critical_table`."""
    smoothing = smoothing or {}
    columns = ("checkpoint_examples", "base_batch", "k", "batch_size", "lr", "steps", "examples")
    table = pd.DataFrame([{key: row[key] for key in columns} for row in rows], columns=list(columns))
    table["loss"] = [br.smoothed_loss(row["losses"], smoothing.get("kind", "last_mean"), smoothing.get("points", 3),
                                      smoothing.get("ema_alpha", 0.5)) for row in rows]
    return table


# --------------------------------------------------------------------------------------------
# Files and the command line (rules of workflow/rules/branching.smk)


def save_base(base: dict, path) -> None:
    """Atomically; tensors and plain containers only, so `load_base` reads it with weights_only=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(base, temporary)
    os.replace(temporary, path)


def load_base(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _write_json(document, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batchscale.branching_run")
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("base", help="train the base run and save its checkpoints")
    base.add_argument("--run-json", required=True)
    base.add_argument("--checkpoints", type=int, required=True)
    base.add_argument("--output", required=True)
    branch = sub.add_parser("branch", help="every branch k of one checkpoint")
    branch.add_argument("--base", required=True)
    branch.add_argument("--index", type=int, required=True)
    branch.add_argument("--branching-json", required=True)
    branch.add_argument("--output", required=True)
    table = sub.add_parser("table", help="local_critical_batch.csv from the branch files")
    table.add_argument("--branching-json", required=True)
    table.add_argument("--output", required=True)
    table.add_argument("branches", nargs="+")
    figure = sub.add_parser("figure", help="local_critical_batch.png/.svg from the table")
    figure.add_argument("--table", required=True)
    figure.add_argument("--study", required=True)
    figure.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "base":
        save_base(train_base(json.loads(args.run_json), args.checkpoints), args.output)
    elif args.command == "branch":
        saved, cfg = load_base(args.base), json.loads(args.branching_json)
        checkpoints = saved["checkpoints"]
        rows = []
        if args.index < len(checkpoints):  # rounding may merge early checkpoint steps: fewer files carry rows
            rows = branch_checkpoint(saved["run"], checkpoints[args.index], args.index, cfg["k"],
                                     cfg["delta_examples"], cfg["lr_rule"], cfg["evaluations"])
        _write_json({"index": args.index, "branches": rows}, args.output)
    elif args.command == "table":
        cfg = json.loads(args.branching_json)
        rows = [row for path in args.branches for row in json.loads(Path(path).read_text())["branches"]]
        result = br.local_critical_table(branch_table(rows, cfg["smoothing"]), cfg["tolerance"], cfg["tolerance_kind"])
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(args.output, index=False)
    else:
        from batchscale.report.figures.base import save_figure
        from batchscale.report.figures.noise import local_critical_batch_figure

        save_figure(local_critical_batch_figure(pd.read_csv(args.table), args.study), args.out,
                    "local_critical_batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
