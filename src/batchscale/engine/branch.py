"""Local critical batch by branching from checkpoints (Merrill et al. 2025): the training part.

There is one engine: the base run and every branch are a pack of one, built as `train_pack` builds a pack
(`parts.build_pack`: model, data on the device, evaluation subset, optimizer, schedule) and trained by the
same step (`step.train_step`: micro-batches, ghost BatchNorm, augmentation from the run's own stream,
gradient clipping) and evaluation (`evaluate.evaluate`, eval mode). What this module adds is a short loop
that can stop at given steps and start from saved weights, which `train_pack` (a whole run, resumable)
does not expose:

- `train_base(run, count)`: the base run (a resolved run config of the study), with its weights, buffers,
  optimizer state, learning rate and examples seen saved at `checkpoint_steps(total, count)`; its batch order
  and initial weights are the engine's, so its trajectory is the one the study's trace of that run records.
- `train_branch(run, checkpoint, k, ...)`: from a checkpoint, training at batch k B with the constant rate
  `branch_lr(lr at the checkpoint, k, rule)` for Delta examples, momentum buffers kept (continued training),
  its own data order; the train loss on the evaluation subset at `evaluations` points over its last half.

The configuration arithmetic (rates, steps, checkpoint steps) is batchscale.spec.branching; the local
critical batch from the branches' losses is batchscale.analysis.branching.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from batchscale.engine.evaluate import evaluate
from batchscale.engine.parts import build_pack
from batchscale.engine.runtime import pick_device
from batchscale.engine.step import train_step
from batchscale.spec.branching import branch_lr, branch_steps, checkpoint_steps

BRANCH_SEED_STRIDE = 1000  # branch j of checkpoint c: seed + 1000 c + j


class Engine:
    """A pack of one run on the engine's pieces: model, data, optimizer, schedule and evaluation subset."""

    def __init__(self, run: dict, splits=None):
        self.run = run
        self.parts = build_pack([run], pick_device(run.get("device", "cpu"), run.get("study")), splits)
        self.state = self.parts.states[0]

    def train_loss(self) -> float:
        """The run's loss on the training evaluation subset, in eval mode (the trace's train_loss)."""
        parts = self.parts
        return evaluate(parts.model, parts.data, parts.model.params, parts.model.buffers, [0], parts.eval_x,
                        parts.eval_y, self.run["evaluation"]["batch_size"], parts.autocast)[0]["loss"]

    def steps(self, count: int, lr: Callable[[int], float], generator: torch.Generator) -> Iterator[int]:
        """Make `count` updates at the run's batch size, yielding the number of updates made after each.

        Args:
            count: how many updates.
            lr: the rate of update `step` (0-based).
            generator: the batch order: a fresh randperm per epoch drawn from it, the last partial batch
                dropped, as train_pack draws a run's batches.
        """
        n, batch_size, device = self.parts.num_train, self.run["batch_size"], self.parts.device
        perm, position = None, n
        for step in range(count):
            if position + batch_size > n:
                perm, position = torch.randperm(n, generator=generator), 0
            index = perm[None, position:position + batch_size].to(device)
            position += batch_size
            train_step(self.parts, [0], index, [lr(step)])
            yield step + 1

    def snapshot(self) -> dict:
        """The weights, buffers and optimizer state now, as copies (tensors and plain containers)."""
        model = self.parts.model
        return {"params": [p.clone() for p in model.params], "buffers": [b.clone() for b in model.buffers],
                "optimizer": clone_tree(self.parts.optimizer.state_dict())}

    def restore(self, saved: dict, momentum: bool = True) -> None:
        """Load a snapshot's weights and buffers, and its optimizer state unless `momentum` is False."""
        model = self.parts.model
        with torch.no_grad():
            for target, value in zip(model.params + model.buffers, saved["params"] + saved["buffers"]):
                target.copy_(value)
        if momentum:
            self.parts.optimizer.load_state_dict(clone_tree(saved["optimizer"]))


def clone_tree(value):
    """A copy of nested dicts, lists and tuples with every tensor cloned."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: clone_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clone_tree(v) for v in value)
    return value


def train_base(run: dict, count: int, splits=None) -> dict:
    """The base run with its checkpoints.

    Args:
        run: a resolved run config of the study.
        count: how many checkpoints, log-spaced over the run (`checkpoint_steps`; rounding may merge some).
        splits: the dataset, when the caller has it already.

    Returns:
        {"run", "total_steps", "checkpoints": [{step, examples_seen, batch_size, lr (the rate of the update
        that made it), train_loss, params, buffers, optimizer}]}, tensors and plain containers only.
    """
    engine = Engine(run, splits)
    total = engine.state.steps_total
    wanted = set(checkpoint_steps(total, count))
    torch.manual_seed(run["seed"])
    saved = []
    for step in engine.steps(total, engine.state.lr, torch.Generator().manual_seed(run["seed"])):
        if step in wanted:
            saved.append({"step": step, "examples_seen": step * run["batch_size"], "batch_size": run["batch_size"],
                          "lr": float(engine.state.lr(step - 1)), "train_loss": engine.train_loss(),
                          **engine.snapshot()})
    return {"run": run, "total_steps": total, "checkpoints": saved}


def branch_evaluation_steps(steps: int, evaluations: int) -> list[int]:
    """`evaluations` steps spread evenly over the last half of a branch (always ending at its last step)."""
    points = np.rint(np.linspace(max(1, steps / 2), steps, evaluations)).astype(int)
    return sorted({int(p) for p in points if p >= 1})


def train_branch(run: dict, checkpoint: dict, k: int, delta_examples: int, lr_rule: str, seed: int,
                 evaluations: int = 5, splits=None) -> dict:
    """One branch from a checkpoint of the base run (see the module docstring).

    Args:
        run: the base run's config.
        checkpoint: one of `train_base`'s checkpoints.
        k: the branch trains at batch k B.
        delta_examples: it trains for Delta examples (`branch_steps`).
        lr_rule: how its rate scales with k (`branch_lr`).
        seed: its batch order and random streams.
        evaluations: how many evaluation points over its last half.
        splits: the dataset, when the caller has it already.

    Returns:
        The branch's checkpoint, batch, rate, steps, examples, evaluation steps and examples, and its train
        losses at those steps (plain values).
    """
    batch_size = int(k) * int(checkpoint["batch_size"])
    engine = Engine({**run, "batch_size": batch_size, "seed": int(seed)}, splits)
    engine.restore(checkpoint)
    lr = branch_lr(checkpoint["lr"], k, lr_rule)
    steps = branch_steps(delta_examples, batch_size)
    eval_steps = branch_evaluation_steps(steps, evaluations)
    torch.manual_seed(seed)
    updates = engine.steps(steps, lambda _step: lr, torch.Generator().manual_seed(int(seed)))
    losses = [engine.train_loss() for step in updates if step in eval_steps]
    return {"checkpoint_step": int(checkpoint["step"]), "checkpoint_examples": int(checkpoint["examples_seen"]),
            "base_batch": int(checkpoint["batch_size"]), "k": int(k), "batch_size": batch_size, "lr": lr,
            "steps": steps, "examples": steps * batch_size, "eval_steps": eval_steps,
            "eval_examples": [s * batch_size for s in eval_steps], "losses": losses}


def branch_checkpoint(run: dict, checkpoint: dict, index: int, ks, delta_examples: int, lr_rule: str,
                      evaluations: int = 5, splits=None) -> list[dict]:
    """Every branch k of checkpoint `index` (a pack of one each: their batch sizes differ), in ascending k,
    branch j seeded by the run's seed + BRANCH_SEED_STRIDE index + j."""
    return [train_branch(run, checkpoint, k, delta_examples, lr_rule, run["seed"] + BRANCH_SEED_STRIDE * index + j,
                         evaluations, splits)
            for j, k in enumerate(sorted(int(k) for k in ks))]


def save_base(base: dict, path) -> None:
    """Write `train_base`'s result atomically; tensors and plain containers only, so `load_base` reads it
    with weights_only=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(base, temporary)
    os.replace(temporary, path)


def load_base(path) -> dict:
    """Read what `save_base` wrote (weights_only: a planted file cannot run code)."""
    return torch.load(path, map_location="cpu", weights_only=True)
