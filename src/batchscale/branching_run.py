"""Prototype: train a base run with checkpoints and branch short runs from them (Merrill et al. 2025).

Self-contained on purpose, to survive the engine rewrite (issue 10): everything it needs from a study is a
`BranchSetup` (data on the device, a model factory, the summed loss, an optimizer factory), and the only
place that touches the engine is `setup_from_run`, a thin adapter over the current single-run engine's
public pieces (load_dataset, DeviceData, build_model, tasks, SGD). The rewrite replaces that adapter; the
lead then moves `train_branch` into the engine proper (docs/noise_scale.md, "What the engine must expose").

The loop is the engine's in miniature: seeded `torch.randperm` epochs with the last partial batch dropped,
exact mean-loss gradients, SGD with momentum from batchscale.engine.sgd (through the setup), and the train
loss measured in eval mode on the study's fixed evaluation subset.

A checkpoint is a dict {step, examples_seen, batch_size, lr, model (state_dict), optimizer (state_dict)},
saved with torch.save. A branch from it loads the weights and the momentum buffers (continued training),
trains at `batch_size` with a constant learning rate for floor(delta / batch_size) steps (at least one),
and evaluates the train loss at `evaluations` points spread evenly over the last half of its steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from batchscale.analysis import branching as br


@dataclass
class BranchSetup:
    """What a branch needs from a study; tensors already on the device."""

    make_model: Callable[[], torch.nn.Module]           # a fresh model on the device
    make_optimizer: Callable[[torch.nn.Module], object]  # .step(lr), .zero_grad(), .state_dict(), .load_state_dict()
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    loss_sum: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # summed loss over the batch's targets
    target_count: Callable[[torch.Tensor], int]
    prepare: Callable[[torch.Tensor, bool], torch.Tensor] = lambda x, train: x  # normalise / augment
    eval_batch_size: int = 4096


def setup_from_run(run: dict) -> BranchSetup:
    """The thin adapter over the current engine: a resolved run config (as `plan` writes it) to a setup."""
    from batchscale.data import load_dataset
    from batchscale.engine import tasks
    from batchscale.engine.sgd import SGD
    from batchscale.engine.train import DeviceData, pick_device
    from batchscale.models import build_model

    device = pick_device(run.get("device", "cpu"))
    splits = load_dataset(run["dataset"], run.get("data_root", "data"), run.get("download", False))
    data = DeviceData(splits, device, run["dataset"].get("augment", False), run["seed"])
    n = data.x_train.shape[0]
    subset_generator = torch.Generator().manual_seed(run["dataset"].get("split_seed", 0) + 104729)
    subset = torch.randperm(n, generator=subset_generator)[: run["evaluation"]["train_subset"]].to(device)
    spec, opt = data.spec, run["optimizer"]
    return BranchSetup(
        make_model=lambda: build_model(run["model"], spec).to(device),
        make_optimizer=lambda model: SGD(model.parameters(), momentum=opt["momentum"], nesterov=opt["nesterov"],
                                         weight_decay=opt["weight_decay"]),
        train_x=data.x_train, train_y=data.y_train, eval_x=data.x_train[subset], eval_y=data.y_train[subset],
        loss_sum=lambda out, y: tasks.loss_sum(spec.task, out, y, spec.ignore_index),
        target_count=lambda y: tasks.target_count(spec.task, y, spec.ignore_index),
        prepare=data.prepare, eval_batch_size=run["evaluation"]["batch_size"],
    )


def eval_loss(setup: BranchSetup, model: torch.nn.Module) -> float:
    """Mean train loss on the evaluation subset, in eval mode (as the engine's train_loss)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, setup.eval_x.shape[0], setup.eval_batch_size):
            xb = setup.prepare(setup.eval_x[start:start + setup.eval_batch_size], False)
            yb = setup.eval_y[start:start + setup.eval_batch_size]
            total += float(setup.loss_sum(model(xb), yb))
            count += setup.target_count(yb)
    model.train(was_training)
    return total / count


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless batch indices: seeded randperm epochs, last partial batch dropped (every step has m examples)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


def _sgd_step(setup: BranchSetup, model, optimizer, index: torch.Tensor, lr: float) -> float:
    optimizer.zero_grad()
    index = index.to(setup.train_x.device)
    y = setup.train_y[index]
    loss = setup.loss_sum(model(setup.prepare(setup.train_x[index], True)), y) / max(setup.target_count(y), 1)
    loss.backward()
    optimizer.step(lr)
    return float(loss.detach())


def make_checkpoint(model, optimizer, step: int, batch_size: int, lr: float) -> dict:
    return {"step": int(step), "examples_seen": int(step * batch_size), "batch_size": int(batch_size),
            "lr": float(lr), "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict())}


def train_base(setup: BranchSetup, batch_size: int, lr: float | Callable[[int], float], total_steps: int,
               save_steps, seed: int, on_step: Callable[[int, torch.nn.Module], None] | None = None
               ) -> dict[int, dict]:
    """Train the base run for `total_steps` and return {step: checkpoint} at each of `save_steps`.

    `lr` is a constant or a function of the step (0-based: the rate of the update that makes step+1);
    a checkpoint records the rate of the step that produced it. `on_step(step, model)`, when given, is
    called at step 0 and after every step (1-based count), e.g. to trace losses or the noise scale; it must
    leave the model's weights and mode as it found them.
    """
    lr_at = lr if callable(lr) else (lambda _step, value=float(lr): value)
    torch.manual_seed(seed)
    model, generator = setup.make_model(), torch.Generator().manual_seed(seed)
    optimizer = setup.make_optimizer(model)
    wanted, saved = {int(s) for s in save_steps}, {}
    model.train()
    batches = _batches(setup.train_x.shape[0], batch_size, generator)
    if on_step is not None:
        on_step(0, model)
    for step in range(total_steps):
        rate = lr_at(step)
        _sgd_step(setup, model, optimizer, next(batches), rate)
        if on_step is not None:
            on_step(step + 1, model)
        if step + 1 in wanted:
            saved[step + 1] = make_checkpoint(model, optimizer, step + 1, batch_size, rate)
    return saved


def branch_evaluation_steps(steps: int, evaluations: int) -> list[int]:
    """`evaluations` steps spread evenly over the last half of a branch (always ending at its last step)."""
    points = np.rint(np.linspace(max(1, steps / 2), steps, evaluations)).astype(int)
    return sorted({int(p) for p in points if p >= 1})


def train_branch(setup: BranchSetup, checkpoint: dict, batch_size: int, lr: float, delta_examples: int,
                 seed: int, evaluations: int = 5, reset_momentum: bool = False) -> dict:
    """One branch: from `checkpoint`, `branch_steps(delta, batch)` steps at `batch_size` and constant `lr`.

    Returns {batch_size, lr, steps, examples, eval_steps, eval_examples, losses}: the train loss on the
    evaluation subset at each evaluation step (examples counted from the checkpoint).
    """
    steps = br.branch_steps(delta_examples, batch_size)
    if batch_size > setup.train_x.shape[0]:
        raise ValueError(f"branch batch {batch_size} exceeds the {setup.train_x.shape[0]} training examples")
    model = setup.make_model()
    model.load_state_dict(checkpoint["model"])
    optimizer = setup.make_optimizer(model)
    if not reset_momentum:
        optimizer.load_state_dict(copy.deepcopy(checkpoint["optimizer"]))
    torch.manual_seed(seed)
    batches = _batches(setup.train_x.shape[0], batch_size, torch.Generator().manual_seed(seed))
    eval_steps = branch_evaluation_steps(steps, evaluations)
    losses = []
    model.train()
    for step in range(1, steps + 1):
        _sgd_step(setup, model, optimizer, next(batches), lr)
        if step in eval_steps:
            losses.append(eval_loss(setup, model))
    return {"batch_size": int(batch_size), "lr": float(lr), "steps": steps, "examples": steps * batch_size,
            "eval_steps": eval_steps, "eval_examples": [s * batch_size for s in eval_steps], "losses": losses}


def branch_checkpoint(setup: BranchSetup, checkpoint: dict, ks, delta_examples: int, lr_rule: str, seed: int,
                      evaluations: int = 5, checkpoint_index: int = 0) -> list[dict]:
    """Every branch k of one checkpoint, at batch k B and lr = branch_lr(lr at the checkpoint, k, rule).

    Branch j of checkpoint c uses seed + 1000 c + j for its data order (no two branches share one).
    """
    base = checkpoint["batch_size"]
    rows = []
    for j, k in enumerate(sorted(int(k) for k in ks)):
        lr = br.branch_lr(checkpoint["lr"], k, lr_rule)
        result = train_branch(setup, checkpoint, k * base, lr, delta_examples, seed + 1000 * checkpoint_index + j,
                              evaluations)
        rows.append({"checkpoint_step": checkpoint["step"], "checkpoint_examples": checkpoint["examples_seen"],
                     "base_batch": base, "k": k, **result})
    return rows


def branch_table(rows: list[dict], smoothing: dict | None = None) -> pd.DataFrame:
    """Tidy (checkpoint_examples, base_batch, k, batch_size, lr, steps, examples, loss) with the smoothed loss,
    ready for `analysis.branching.local_critical_table`."""
    smoothing = smoothing or {}
    table = pd.DataFrame([{key: row[key] for key in ("checkpoint_examples", "base_batch", "k", "batch_size", "lr",
                                                      "steps", "examples")} for row in rows])
    table["loss"] = [br.smoothed_loss(row["losses"], smoothing.get("kind", "last_mean"), smoothing.get("points", 3),
                                      smoothing.get("ema_alpha", 0.5)) for row in rows]
    return table


def save_checkpoint(checkpoint: dict, path) -> None:
    """Write atomically (temporary name, then rename), as the engine writes traces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, temporary)
    temporary.replace(path)


def load_checkpoint(path, device: str | torch.device = "cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=False)
