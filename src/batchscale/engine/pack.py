"""Packed training: the runs of one study at one batch size, trained in one process by one vectorised step.

The loop, top to bottom:
- the dataset is on the device once; every run draws its own `torch.randperm(n)` per epoch from its own
  seeded generator, and since all runs of a pack share the batch size they share the position, so a step's
  batches are one slice of the stacked permutations, `perms[:, i:i+m]` (k runs x m examples);
- one step (`step.train_step`) computes every active run's gradient at once (vmap over stacked
  parameters), in micro-batches whose summed losses are divided by the whole batch's target count, so
  accumulation is exact, and updates only the active runs, each with its own learning rate (strategy,
  warm-up, schedule) and hyperparameters;
- a run that diverges (non-finite or too large training loss) stops there, its trace ends, and the others
  go on;
- evaluation (`evaluate.Recorder`), on every run's log-spaced grid plus its final step, is vectorised over
  the runs due;
- the pack checkpoints every `checkpoint_seconds` and resumes bit for bit after a kill.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from batchscale.data import Splits
from batchscale.engine import checkpoint as checkpoints
from batchscale.engine.evaluate import APPROX_SCALARS, Recorder, linear_approximation_at
from batchscale.engine.parts import PackParts, build_pack, check_pack
from batchscale.engine.runtime import RunResult, TerminationFlag, pick_device
from batchscale.engine.step import train_step


def train_pack(runs: list[dict], threads: int = 1, checkpoint_path: str | Path | None = None, progress: bool = True,
               splits: Splits | None = None, vectorise: bool | None = None) -> list[RunResult]:
    """Train the runs of one pack.

    Args:
        runs: resolved run configs of one study at one batch size (they share `parts.SHARED_KEYS`).
        threads: torch's CPU threads.
        checkpoint_path: where the pack checkpoints and resumes from (None: no checkpoint).
        progress: show a progress bar on stderr.
        splits: the dataset, when the caller has it already.
        vectorise: None decides (`parts.choose_vectorising`), False trains run by run, True insists on vmap.

    Returns:
        One RunResult per run, in the order of `runs`.
    """
    check_pack(runs)
    torch.set_num_threads(threads)
    device = pick_device(runs[0]["device"], runs[0]["study"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per pack: let cuDNN pick the fastest kernels
    parts = build_pack(runs, device, splits, vectorise)
    return PackTrainer(parts, threads, checkpoint_path).train(progress)


def train_run(run: dict, threads: int = 1, checkpoint_path: str | Path | None = None,
              progress: bool = True, splits: Splits | None = None) -> RunResult:
    """Train one run alone: a pack of one."""
    return train_pack([run], threads=threads, checkpoint_path=checkpoint_path, progress=progress, splits=splits)[0]


class PackTrainer:
    """The training loop of one pack: batches, steps, divergence, evaluations and the checkpoint.

    Everything a checkpoint holds is an attribute here: the batch generators and permutations, `progress`
    (step, position in the epoch, seconds so far) and `previous` (the weights before the last step, where
    the linear approximation error of a run that diverges at that step is measured).
    """

    def __init__(self, parts: PackParts, threads: int, checkpoint_path: str | Path | None):
        self.parts, self.threads = parts, threads
        self.recorder = Recorder(parts)
        self.linear_approx = parts.evaluation.get("linear_approx", True)
        self.batch_generators = [torch.Generator().manual_seed(run["seed"]) for run in parts.runs]
        self.path = Path(checkpoint_path) if checkpoint_path else None
        self.pack_id = checkpoints.pack_hash(parts.runs)
        self.progress = {"step": 0, "position": 0, "elapsed": 0.0, "eval_seconds": 0.0}
        self.perms = self.previous = None
        self.check_every = 1 if parts.device.type == "cpu" else 25  # a CPU .item() is free; on CUDA it is a sync
        self.resume()
        self.started = time.perf_counter() - self.progress["elapsed"]

    def resume(self) -> None:
        """Continue from the pack's checkpoint, if there is one written for this pack."""
        parts = self.parts
        saved = checkpoints.load(self.path, self.pack_id, parts.device)
        if saved is None:
            return
        for target, value in zip(parts.model.params + parts.model.buffers, saved["params"] + saved["buffers"]):
            target.copy_(value)
        parts.optimizer.load_state_dict(saved["optimizer"])
        for generator, state in zip(self.batch_generators, saved["batch_generators"]):
            generator.set_state(state.cpu())
        torch.set_rng_state(saved["cpu_rng"].cpu())
        if parts.device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu())
        for state, content in zip(parts.states, saved["runs"]):
            state.load_checkpoint(content)
        self.perms, self.progress, self.previous = saved["perms"], saved["progress"], saved.get("previous")
        self.recorder.seconds = self.progress["eval_seconds"]
        print(f"resumed from {self.path} at step {self.progress['step']}", file=sys.stderr)

    def save_checkpoint(self) -> None:
        """Write everything the loop needs to continue bit for bit (see the class docstring)."""
        parts = self.parts
        self.progress["elapsed"] = time.perf_counter() - self.started
        self.progress["eval_seconds"] = self.recorder.seconds
        checkpoints.save(self.path, self.pack_id, {
            "params": parts.model.params, "buffers": parts.model.buffers, "optimizer": parts.optimizer.state_dict(),
            "batch_generators": [g.get_state() for g in self.batch_generators], "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if parts.device.type == "cuda" else None,
            "runs": [state.to_checkpoint() for state in parts.states], "perms": self.perms,
            "progress": self.progress, "previous": self.previous})

    def train(self, progress: bool = True) -> list[RunResult]:
        """Train every run to its end (completed or diverged), checkpointing as configured."""
        states = self.parts.states
        if self.progress["step"] == 0 and not states[0].points["step"]:
            for state, loss in zip(states, self.recorder.record(list(range(len(states))), 0, self.started)):
                state.initial_loss = loss
        bar = tqdm(total=max(s.steps_total for s in states), initial=self.progress["step"], file=sys.stderr,
                   disable=not progress, mininterval=5.0, desc=self.parts.label)
        last_checkpoint = time.perf_counter()
        terminate = TerminationFlag() if self.path is not None else None
        try:
            while any(state.is_training() for state in states):
                if terminate is not None and terminate.requested:
                    # SLURM preemption / scancel sends SIGTERM first: save what we have, then stop
                    self.save_checkpoint()
                    raise SystemExit(f"terminated at step {self.progress['step']}; checkpoint saved to {self.path}")
                self.step()
                bar.update(1)
                checkpoint_due = time.perf_counter() - last_checkpoint > self.parts.first["checkpoint_seconds"]
                if self.path is not None and checkpoint_due:
                    self.save_checkpoint()
                    last_checkpoint = time.perf_counter()
        finally:
            bar.close()
            if terminate is not None:
                terminate.restore()
        return self.results()

    def next_batches(self, ids: list[int]) -> torch.Tensor:
        """The example indices (len(ids), m) of the next step of runs `ids`, a new epoch's permutations
        when the current ones cannot fill a batch."""
        n, m = self.parts.num_train, self.parts.first["batch_size"]
        if self.perms is None or self.progress["position"] + m > n:
            self.perms = torch.stack([torch.randperm(n, generator=g) for g in self.batch_generators])
            self.progress["position"] = 0
        position = self.progress["position"]
        self.progress["position"] += m
        return self.perms[ids, position:position + m].to(self.parts.device, non_blocking=True)

    def step(self) -> None:
        """One update of the runs still training, then their divergence checks and the evaluations due."""
        states, step = self.parts.states, self.progress["step"]
        ids = [r for r, state in enumerate(states) if state.is_training()]
        index = self.next_batches(ids)
        if self.linear_approx:  # the last finite weights of a run that diverges at this step
            self.previous = [p.clone() for p in self.parts.model.params]
        losses = train_step(self.parts, ids, index, [states[r].lr(step) if r in ids else 0.0
                                                     for r in range(len(states))])
        step = self.progress["step"] = step + 1
        due, diverged = self.check_losses(ids, losses, step)
        self.record_due(due, diverged, step)

    def check_losses(self, ids: list[int], losses: torch.Tensor, step: int) -> tuple[list[int], list[int]]:
        """Stop the runs whose batch loss diverged; measure the linear approximation error where warm-up ends.

        Returns:
            (runs due for evaluation at `step`, runs that diverged), positions in the pack.
        """
        states = self.parts.states
        batch_losses = losses.tolist() if (step % self.check_every == 0 or
                                           any(step in states[r].eval_points for r in ids)) else None
        due, diverged = [], []
        for j, r in enumerate(ids):
            state = states[r]
            if batch_losses is not None and (not math.isfinite(batch_losses[j])
                                             or batch_losses[j] > state.run["divergence_factor"] * state.initial_loss):
                state.status = "diverged"
                diverged.append(r)
                due.append(r)
            elif step in state.eval_points:
                due.append(r)
            if self.linear_approx and state.warmup_steps and step == state.warmup_steps and state.is_training():
                (state.scalars["linear_approx_error_warmup_end"],
                 state.scalars["linear_approx_error_warmup_end_rel"]) = linear_approximation_at(
                    self.parts, [r], self.parts.model.select([r])[0])[0]
        return due, diverged

    def record_due(self, due: list[int], diverged: list[int], step: int) -> None:
        """Evaluate the runs due; mark those at their end completed (or diverged, on a non-finite eval loss);
        measure the final linear approximation error of the runs that diverged, at their last finite weights."""
        states = self.parts.states
        if due:
            for r, loss in zip(due, self.recorder.record(due, step, self.started)):
                state = states[r]
                # Only a non-finite evaluation loss counts here: early in training BatchNorm's running
                # statistics lag the weights, so an eval-mode loss can spike while training is fine.
                if state.is_training() and not math.isfinite(loss):
                    state.status = "diverged"
                    diverged.append(r)
                elif state.is_training() and step >= state.steps_total:
                    state.status = "completed"
        if self.linear_approx and diverged:
            index_ids = torch.tensor(diverged, device=self.parts.device)
            last = [p.index_select(0, index_ids) for p in self.previous]
            for r, (error, relative) in zip(diverged, linear_approximation_at(self.parts, diverged, last)):
                states[r].scalars["final_linear_approx_error"] = error
                states[r].scalars["final_linear_approx_error_rel"] = relative

    def results(self) -> list[RunResult]:
        """Each run's result, its end-of-run linear approximation errors NaN where not measured."""
        parts = self.parts
        m, micro_batch = parts.first["batch_size"], parts.micro_batch
        results = []
        for state in parts.states:
            scalars = dict(state.scalars)
            if self.linear_approx:
                if state.status == "completed":  # the final step is an evaluation point: its value
                    scalars["final_linear_approx_error"] = state.points["linear_approx_error"][-1]
                    scalars["final_linear_approx_error_rel"] = state.points["linear_approx_error_rel"][-1]
                for name in APPROX_SCALARS:
                    scalars.setdefault(name, float("nan"))
            results.append(RunResult(
                run=state.run, status=state.status, steps_total=state.steps_total, points=state.points,
                scalars=scalars, device=str(parts.device), threads=self.threads,
                wall_seconds=time.perf_counter() - self.started, eval_seconds=self.recorder.seconds,
                info={"num_train": parts.num_train, "num_test": int(parts.data.x_test.shape[0]),
                      "task": parts.data.spec.task, "num_classes": int(parts.data.spec.num_classes),
                      "steps_per_epoch": state.steps_per_epoch,
                      "warmup_steps": state.warmup_steps, "ghost_batch_size": min(micro_batch or m, m),
                      "pack_size": len(parts.runs), "pack_vectorised": parts.model.vectorised,
                      "pack_vectorised_eval": parts.model.vectorised and parts.model.vectorised_eval,
                      **parts.split_info}))
        return results
