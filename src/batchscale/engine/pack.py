"""Packed training: the runs of one study at one batch size, trained in one process by one vectorised step.

The loop, top to bottom:
- the dataset is on the device once; every run draws its own `torch.randperm(n)` per epoch from its own
  seeded generator, and since all runs of a pack share the batch size they share the position, so a step's
  batches are one slice of the stacked permutations, `perms[:, i:i+m]` (k runs x m examples);
- one step computes every active run's gradient at once (vmap over stacked parameters), in micro-batches
  whose summed losses are divided by the whole batch's target count, so accumulation is exact;
- the optimizer updates only active runs, each with its own learning rate (strategy, warm-up, schedule)
  and hyperparameters; a run that diverges (non-finite or too large training loss) stops there, its
  trace ends, and the others go on;
- evaluation, on every run's log-spaced grid plus its final step, is vectorised over the runs due;
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
from batchscale.engine import noise_points, tasks
from batchscale.engine.packed_model import PackedModel
from batchscale.engine.parts import build_pack, check_pack
from batchscale.engine.runtime import DeviceData, RunResult, TerminationFlag, pick_device
from batchscale.engine.step import batch_gradient, train_step
from batchscale.errors import MicroBatchTooLarge

def evaluate(model: PackedModel, data: DeviceData, params, buffers, ids, x, y, batch_size: int, autocast) -> list[dict]:
    """Each run's mean loss and accuracy (and mean IoU for segmentation) over (x, y), in eval mode."""
    spec, k = data.spec, len(ids)
    loss = torch.zeros(k, dtype=torch.float64, device=x.device)
    correct = torch.zeros(k, dtype=torch.float64, device=x.device)
    count, confusion = 0, [None] * k
    for start in range(0, x.shape[0], batch_size):
        xb, yb = data.prepare(x[start:start + batch_size], train=False), y[start:start + batch_size]
        output = model.outputs(params, buffers, ids, xb, autocast)
        for j in range(k):
            loss[j] += tasks.loss_sum(spec.task, output[j], yb, spec.ignore_index).double()
            correct[j] += tasks.correct_count(spec.task, output[j], yb, spec.ignore_index).double().to(x.device)
            if spec.task == "segmentation":
                matrix = tasks.confusion_matrix(output[j], yb, spec.num_classes, spec.ignore_index)
                confusion[j] = matrix if confusion[j] is None else confusion[j] + matrix
        count += tasks.target_count(spec.task, yb, spec.ignore_index)
    results = [{"loss": l / count, "acc": c / count} for l, c in zip(loss.tolist(), correct.tolist())]
    if spec.task == "segmentation":
        for result, matrix in zip(results, confusion):
            result["miou"] = tasks.mean_iou(matrix)
    return results


def linear_approximation_errors(model, data, params, buffers, ids, states, loss_star, eval_x, eval_y, autocast):
    """|L(w) - L(w*) - <g_m, w - w*>| at w = w* - eta0 (m/m0) g_m for runs `ids` (paper Sec. 4.2, Fig. 2 right),
    and the same divided by |L(w) - L(w*)|.

    w* is each run's weights as given, L the eval-mode loss on the fixed training subset (loss_star: L(w*))
    and g_m the eval-mode gradient of a fresh batch of m examples drawn from the run's own generator."""
    run = states[ids[0]].run
    n, m = data.x_train.shape[0], min(run["batch_size"], data.x_train.shape[0])
    index = torch.stack([torch.randperm(n, generator=states[r].approx_generator)[:m] for r in ids]).to(data.x_train.device)
    _, grads = batch_gradient(model, data, index, states, ids, params, buffers, run.get("micro_batch"), autocast,
                              train=False)
    step = torch.tensor([states[r].run["eta0"] * states[r].run["batch_size"] / states[r].run["base_batch"]
                         for r in ids], dtype=params[0].dtype, device=params[0].device)
    moved = [p - step.view(-1, *([1] * (p.dim() - 1))) * g for p, g in zip(params, grads)]
    inner = -step.double() * sum(g.double().flatten(1).pow(2).sum(1) for g in grads)
    loss_moved = evaluate(model, data, moved, buffers, ids, eval_x, eval_y, run["evaluation"]["batch_size"], autocast)
    errors = []
    for j, (result, star) in enumerate(zip(loss_moved, loss_star)):
        error = abs(result["loss"] - star - float(inner[j]))
        change = abs(result["loss"] - star)
        errors.append((error, error / change if change > 0 else float("nan")))
    return errors


def train_pack(runs: list[dict], threads: int = 1, checkpoint_path: str | Path | None = None, progress: bool = True,
               splits: Splits | None = None, vectorise: bool | None = None) -> list[RunResult]:
    """Train the runs of one pack; `vectorise`: None decides (choose_vectorising), False trains run by run,
    True insists on vmap."""
    check_pack(runs)
    torch.set_num_threads(threads)
    first = runs[0]
    device = pick_device(first["device"], first["study"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per pack: let cuDNN pick the fastest kernels
    parts = build_pack(runs, device, splits, vectorise)
    model, data, states, optimizer, autocast = parts.model, parts.data, parts.states, parts.optimizer, parts.autocast
    m, micro_batch, evaluation = first["batch_size"], first.get("micro_batch"), first["evaluation"]
    n = parts.num_train
    subset, eval_x, eval_y, label = parts.subset, parts.eval_x, parts.eval_y, parts.label
    linear_approx = evaluation.get("linear_approx", True)
    noise_cfg = first.get("noise_scale") or {}
    batch_generators = [torch.Generator().manual_seed(run["seed"]) for run in runs]
    all_ids = list(range(len(runs)))

    pack_id = checkpoints.pack_hash(runs)
    path = Path(checkpoint_path) if checkpoint_path else None
    progress_state = {"step": 0, "position": 0, "elapsed": 0.0, "eval_seconds": 0.0}
    perms = previous = None
    saved = checkpoints.load(path, pack_id, device)
    if saved is not None:
        for target, value in zip(model.params + model.buffers, saved["params"] + saved["buffers"]):
            target.copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
        for generator, state in zip(batch_generators, saved["batch_generators"]):
            generator.set_state(state.cpu())
        torch.set_rng_state(saved["cpu_rng"].cpu())
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu())
        for state, content in zip(states, saved["runs"]):
            state.load_checkpoint(content)
        perms, progress_state = saved["perms"], saved["progress"]
        previous = saved.get("previous")
        print(f"resumed from {path} at step {progress_state['step']}", file=sys.stderr)

    def save_checkpoint():
        progress_state["elapsed"] = time.perf_counter() - start_time
        checkpoints.save(path, pack_id, {
            "params": model.params, "buffers": model.buffers, "optimizer": optimizer.state_dict(),
            "batch_generators": [g.get_state() for g in batch_generators], "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "runs": [state.to_checkpoint() for state in states], "perms": perms, "progress": progress_state,
            "previous": previous})

    start_time = time.perf_counter() - progress_state["elapsed"]

    def record(ids: list[int], step: int) -> list[float]:
        """Evaluate runs `ids` at `step` and append to their traces; returns their train losses."""
        began = time.perf_counter()
        params, buffers = model.select(ids)
        try:
            train = evaluate(model, data, params, buffers, ids, eval_x, eval_y, evaluation["batch_size"], autocast)
            test = evaluate(model, data, params, buffers, ids, data.x_test, data.y_test, evaluation["batch_size"],
                            autocast)
            approx = linear_approximation_errors(model, data, params, buffers, ids, states, [t["loss"] for t in train],
                                                 eval_x, eval_y, autocast) if linear_approx else None
            noise = noise_values(ids, params, buffers, step) if noise_cfg.get("enabled") else None
        except torch.OutOfMemoryError:
            raise MicroBatchTooLarge(
                f"out of device memory evaluating {evaluation['batch_size']} examples at once; "
                f"lower `evaluation.batch_size` in study {first['study']!r}") from None
        progress_state["eval_seconds"] += time.perf_counter() - began
        for j, r in enumerate(ids):
            state = states[r]
            values = {"step": step, "epoch": step / state.steps_per_epoch, "examples_seen": step * m,
                      "lr": state.lr(max(step - 1, 0)), "train_loss": train[j]["loss"], "train_acc": train[j]["acc"],
                      "test_loss": test[j]["loss"], "test_acc": test[j]["acc"],
                      "wall_time": time.perf_counter() - start_time}
            if data.spec.task == "language_model":
                values["test_perplexity"] = math.exp(min(test[j]["loss"], 700.0))
            if data.spec.task == "segmentation":
                values["test_miou"] = test[j]["miou"]
            if approx is not None:
                values["linear_approx_error"], values["linear_approx_error_rel"] = approx[j]
            if noise is not None:
                values.update(zip(noise_points.NOISE_FIELDS, (float(column[j]) for column in noise)))
            for name, value in values.items():
                state.points.setdefault(name, []).append(value)
        return [t["loss"] for t in train]

    def noise_values(ids: list[int], params, buffers, step: int):
        """The noise-scale columns (noise_points.NOISE_FIELDS) of runs `ids` at `step`, each a list over ids."""
        def gradient(index):
            return batch_gradient(model, data, index, states, ids, params, buffers, micro_batch, autocast,
                                  train=False)[1]
        g2, trace = noise_points.two_batch_points(gradient, subset, [states[r].run["seed"] for r in ids], step,
                                                  noise_cfg)
        if params[0].shape[0] != len(ids):  # run by run, select() gave the whole stack
            index_ids = torch.tensor(ids, device=device)
            params, buffers = [p.index_select(0, index_ids) for p in params], [b.index_select(0, index_ids)
                                                                               for b in buffers]
        exact = noise_points.exact_points(model, params, buffers, data.prepare(eval_x, train=False), eval_y,
                                          data.spec.task, data.spec.ignore_index,
                                          noise_cfg["exact_max_params_times_examples"], label)
        return g2.tolist(), trace.tolist(), exact[0], exact[1]

    def approx_scalar(ids: list[int], params) -> list[tuple[float, float]]:
        """The linear approximation error (absolute, relative) of runs `ids` at the given weights (NaN where
        they are not finite)."""
        buffers = model.select(ids)[1]
        finite = [all(bool(torch.isfinite(p[j]).all()) for p in params) for j in range(len(ids))]
        loss_star = [t["loss"] for t in evaluate(model, data, params, buffers, ids, eval_x, eval_y,
                                                 evaluation["batch_size"], autocast)]
        errors = linear_approximation_errors(model, data, params, buffers, ids, states, loss_star, eval_x, eval_y,
                                             autocast)
        return [e if ok else (float("nan"), float("nan")) for e, ok in zip(errors, finite)]

    if progress_state["step"] == 0 and not states[0].points["step"]:
        for state, loss in zip(states, record(all_ids, 0)):
            state.initial_loss = loss
    check_every = 1 if device.type == "cpu" else 25  # a CPU .item() is free; on CUDA it is a sync
    bar = tqdm(total=max(s.steps_total for s in states), initial=progress_state["step"], file=sys.stderr,
               disable=not progress, mininterval=5.0, desc=label)
    last_checkpoint = time.perf_counter()
    terminate = TerminationFlag() if path is not None else None
    try:
        while any(state.is_training() for state in states):
            step = progress_state["step"]
            if terminate is not None and terminate.requested:
                # SLURM preemption / scancel sends SIGTERM first: save what we have, then stop
                save_checkpoint()
                raise SystemExit(f"terminated at step {step}; checkpoint saved to {path}")
            if perms is None or progress_state["position"] + m > n:
                perms = torch.stack([torch.randperm(n, generator=g) for g in batch_generators])
                progress_state["position"] = 0
            ids = [r for r, state in enumerate(states) if state.is_training()]
            position = progress_state["position"]
            index = perms[ids, position:position + m].to(device, non_blocking=True)
            if linear_approx:  # the last finite weights of a run that diverges at this step
                previous = [p.clone() for p in model.params]
            losses = train_step(parts, ids, index, [states[r].lr(step) if r in ids else 0.0 for r in all_ids])
            bar.update(1)
            step = progress_state["step"] = step + 1
            progress_state["position"] += m
            batch_losses = losses.tolist() if (step % check_every == 0 or
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
                if linear_approx and state.warmup_steps and step == state.warmup_steps and state.is_training():
                    (state.scalars["linear_approx_error_warmup_end"],
                     state.scalars["linear_approx_error_warmup_end_rel"]) = approx_scalar([r], model.select([r])[0])[0]
            if due:
                for r, loss in zip(due, record(due, step)):
                    state = states[r]
                    # Only a non-finite evaluation loss counts here: early in training BatchNorm's running
                    # statistics lag the weights, so an eval-mode loss can spike while training is fine.
                    if state.is_training() and not math.isfinite(loss):
                        state.status = "diverged"
                        diverged.append(r)
                    elif state.is_training() and step >= state.steps_total:
                        state.status = "completed"
            if linear_approx and diverged:
                index_ids = torch.tensor(diverged, device=device)
                last = [p.index_select(0, index_ids) for p in previous]
                for r, (error, relative) in zip(diverged, approx_scalar(diverged, last)):
                    states[r].scalars["final_linear_approx_error"] = error
                    states[r].scalars["final_linear_approx_error_rel"] = relative
            if path is not None and time.perf_counter() - last_checkpoint > first["checkpoint_seconds"]:
                save_checkpoint()
                last_checkpoint = time.perf_counter()
    finally:
        bar.close()
        if terminate is not None:
            terminate.restore()

    results = []
    for state in states:
        scalars = dict(state.scalars)
        if linear_approx:
            if state.status == "completed":  # the final step is an evaluation point: its value
                scalars["final_linear_approx_error"] = state.points["linear_approx_error"][-1]
                scalars["final_linear_approx_error_rel"] = state.points["linear_approx_error_rel"][-1]
            for name in ("final_linear_approx_error", "final_linear_approx_error_rel",
                         "linear_approx_error_warmup_end", "linear_approx_error_warmup_end_rel"):
                scalars.setdefault(name, float("nan"))
        results.append(RunResult(
            run=state.run, status=state.status, steps_total=state.steps_total, points=state.points, scalars=scalars,
            device=str(device), threads=threads, wall_seconds=time.perf_counter() - start_time,
            eval_seconds=progress_state["eval_seconds"],
            info={"num_train": n, "num_test": int(data.x_test.shape[0]), "task": data.spec.task,
                  "steps_per_epoch": state.steps_per_epoch, "warmup_steps": state.warmup_steps,
                  "ghost_batch_size": min(micro_batch or m, m), "pack_size": len(runs),
                  "pack_vectorised": model.vectorised, "pack_vectorised_eval": model.vectorised and
                  model.vectorised_eval, **parts.split_info}))
    return results


def train_run(run: dict, threads: int = 1, checkpoint_path: str | Path | None = None,
              progress: bool = True, splits: Splits | None = None) -> RunResult:
    """Train one run alone: a pack of one."""
    return train_pack([run], threads=threads, checkpoint_path=checkpoint_path, progress=progress, splits=splits)[0]
