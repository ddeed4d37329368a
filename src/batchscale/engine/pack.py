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

from batchscale.data import Splits, load_dataset
from batchscale.engine import checkpoint as checkpoints
from batchscale.engine import noise_points, tasks
from batchscale.engine.optim import build_optimizer
from batchscale.engine.packed_model import PackedModel, build_packed_model
from batchscale.engine.state import RunState
from batchscale.engine.runtime import (DeviceData, RunResult, TerminationFlag, autocast_factory,
                                       pick_device)
from batchscale.errors import MicroBatchTooLarge

# vmap costs about 0.4 ms per step on the CPU whatever the pack; a plain step of a digits MLP about 0.12 ms:
# measured break-even near 3 runs (benchmarks/bench_packing.py measures 16)
MIN_RUNS_TO_VECTORISE_ON_CPU = 4
# what every run of a pack must share (everything else may differ: seed, strategy, rates, optimizer values)
SHARED_KEYS = ("study", "batch_size", "dataset", "data_root", "model", "micro_batch", "evaluation", "device",
               "precision", "channels_last", "noise_scale")


def check_pack(runs: list[dict]) -> None:
    for key in SHARED_KEYS:
        values = {repr(run.get(key)) for run in runs}
        if len(values) > 1:
            raise ValueError(f"the runs of a pack must share `{key}`; got {len(values)} different values")
    if len({run["optimizer"].get("grad_clip") for run in runs}) > 1:
        raise ValueError("the runs of a pack must share `optimizer.grad_clip`")


def batch_inputs(data: DeviceData, index: torch.Tensor, states: list[RunState], ids: list[int], train: bool):
    """Inputs (k, b, ...) and targets of runs `ids` at example indices (k, b), each run augmented by its own stream."""
    k, b = index.shape
    x = data.x_train[index.flatten()]
    if train and data.augment:
        x = torch.stack([data.prepare(part, train=True, generator=states[r].augment_generator)
                         for part, r in zip(x.view(k, b, *x.shape[1:]), ids)])
    else:
        x = data.prepare(x, train=False)
        x = x.view(k, b, *x.shape[1:])
    return x, data.y_train[index]


def module_gradient(module: torch.nn.Module, data: DeviceData, index: torch.Tensor, micro_batch: int | None,
                    train: bool = True):
    """One model's mean loss and gradient (a list like its parameters) on examples `index`, through the
    engine's packed step as a pack of one; its BatchNorm statistics are updated in place."""
    model = PackedModel([module], data.spec)
    state = RunState(run={}, steps_per_epoch=1, steps_total=1, warmup_steps=0, eval_points=[],
                     augment_generator=data.augment_generator)
    loss, grads = batch_gradient(model, data, index[None], [state], [0], model.params, model.buffers, micro_batch,
                                 autocast_factory(index.device, "fp32"), train)
    with torch.no_grad():
        for buffer, stacked in zip(module.buffers(), model.buffers):
            buffer.copy_(stacked[0])
    return loss[0], [g[0] for g in grads]


def batch_gradient(model: PackedModel, data: DeviceData, index, states, ids, params, buffers, micro_batch,
                   autocast, train: bool = True):
    """Per-run mean loss and gradient of runs `ids` on their batches `index` (k, m), in micro-batches."""
    spec = data.spec
    y_all = data.y_train[index]
    totals = torch.tensor([max(tasks.target_count(spec.task, y, spec.ignore_index), 1) for y in y_all],
                          dtype=torch.float32, device=index.device)
    m = index.shape[1]
    chunk = micro_batch if micro_batch and micro_batch < m else m
    losses, grads = 0.0, None
    for start in range(0, m, chunk):
        x, y = batch_inputs(data, index[:, start:start + chunk], states, ids, train)
        part_losses, part_grads = model.gradients(params, buffers, ids, x, y, totals, train, autocast)
        losses = losses + part_losses
        grads = part_grads if grads is None else [g + p for g, p in zip(grads, part_grads)]
    return losses, grads


def clip_gradients(grads, max_norm: float):
    """Per run, torch.nn.utils.clip_grad_norm_: scale to at most `max_norm` global L2 norm."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)
    scale = (max_norm / (torch.linalg.vector_norm(norms, dim=1) + 1e-6)).clamp(max=1.0)
    return [g * scale.view(-1, *([1] * (g.dim() - 1))).to(g.dtype) for g in grads]


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


def choose_vectorising(model: PackedModel, data: DeviceData, states, vectorise: bool | None, autocast, label: str,
                       micro_batch: int | None) -> bool:
    """Whether the pack trains by one vmapped step: tried on a first batch and compared with the run-by-run
    gradient (None), or as asked (True: tried and compared all the same, False). A pack of one, or on the CPU of fewer than
    MIN_RUNS_TO_VECTORISE_ON_CPU runs, trains run by run, where vmap's fixed cost per step is not repaid."""
    runs = len(states)
    if vectorise is False or (vectorise is None and
                              runs < (MIN_RUNS_TO_VECTORISE_ON_CPU if data.x_train.device.type == "cpu" else 2)):
        return False
    m = states[0].run["batch_size"]
    trial = torch.arange(min(m, 16), device=data.x_train.device).expand(runs, -1)
    x, y = batch_inputs(data, trial, states, list(range(runs)), train=False)
    totals = torch.full((runs,), float(trial.shape[1]), device=data.x_train.device)
    try:
        reason = model.check_vectorising(x, y, totals, autocast)
    except torch.OutOfMemoryError:
        raise MicroBatchTooLarge(
            f"out of device memory at a micro-batch of {min(micro_batch or m, m)} examples; "
            f"lower `micro_batch` in study {states[0].run['study']!r}") from None
    if reason is not None and vectorise:
        raise ValueError(f"{label}: vectorising was asked for but fails: {reason}")
    if reason is not None:
        print(f"{label}: cannot vectorise this model ({reason}); training its runs one after another",
              file=sys.stderr)
    elif not model.vectorised_eval:
        print(f"{label}: training vectorised; evaluating its runs one after another (vmap cannot evaluate "
              f"this model without gradients)", file=sys.stderr)
    return reason is None


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
    autocast = autocast_factory(device, first.get("precision", "fp32"))
    m, micro_batch, evaluation = first["batch_size"], first.get("micro_batch"), first["evaluation"]
    splits = splits if splits is not None else load_dataset(first["dataset"], first["data_root"], first["download"])
    data = DeviceData(splits, device, first["dataset"].get("augment", False), first["seed"])
    n = data.x_train.shape[0]
    if m > n:
        raise ValueError(f"batch size {m} is larger than the {n} training examples of study {first['study']!r}")
    states = [RunState.create(run, n, device) for run in runs]
    # Fixed training subset for the train loss: the same examples for every run of the study.
    subset_generator = torch.Generator().manual_seed(first["dataset"].get("split_seed", 0) + 104729)
    subset = torch.randperm(n, generator=subset_generator)[: evaluation["train_subset"]].to(device)
    eval_x, eval_y = data.x_train[subset], data.y_train[subset]
    linear_approx = evaluation.get("linear_approx", True)
    noise_cfg = first.get("noise_scale") or {}

    model = build_packed_model(runs, data.spec, device,
                               channels_last=bool(first.get("channels_last")) and device.type == "cuda"
                               and len(data.spec.input_shape) == 3)
    dtype = model.params[0].dtype
    if dtype != torch.float32 and data.x_train.is_floating_point():  # a float64 model (tests): float64 inputs
        data.x_train, data.x_test = data.x_train.to(dtype), data.x_test.to(dtype)
        eval_x = eval_x.to(dtype)
    optimizer = build_optimizer(runs, model.params)
    batch_generators = [torch.Generator().manual_seed(run["seed"]) for run in runs]
    all_ids = list(range(len(runs)))
    label = f"{first['study']} bs{m} pack of {len(runs)}"

    model.vectorised = choose_vectorising(model, data, states, vectorise, autocast, label, micro_batch)

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
            # float64: the optimizers cast it to the parameters' dtype (AdamW keeps its scalars in float64)
            lr = torch.tensor([states[r].lr(step) if r in ids else 0.0 for r in all_ids], dtype=torch.float64,
                              device=device)
            active = torch.tensor([r in ids for r in all_ids], device=device)
            if linear_approx:  # the last finite weights of a run that diverges at this step
                previous = [p.clone() for p in model.params]
            params, buffers = model.select(ids)
            try:
                losses, grads = batch_gradient(model, data, index, states, ids, params, buffers, micro_batch, autocast)
            except torch.OutOfMemoryError:
                raise MicroBatchTooLarge(
                    f"out of device memory at a micro-batch of {min(micro_batch or m, m)} examples; "
                    f"lower `micro_batch` in study {first['study']!r}") from None
            model.put_buffers(ids, buffers)
            if first["optimizer"].get("grad_clip"):
                grads = clip_gradients(grads, first["optimizer"]["grad_clip"])
            if len(ids) < len(runs):  # inactive runs get a zero gradient, and are not updated anyway
                index_ids = torch.tensor(ids, device=device)
                grads = [torch.zeros_like(p).index_copy_(0, index_ids, g) for p, g in zip(model.params, grads)]
            optimizer.step(grads, lr, active)
            step = progress_state["step"] = step + 1
            progress_state["position"] += m
            bar.update(1)
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
                  model.vectorised_eval, **splits.info}))
    return results


def train_run(run: dict, threads: int = 1, checkpoint_path: str | Path | None = None,
              progress: bool = True, splits: Splits | None = None) -> RunResult:
    """Train one run alone: a pack of one."""
    return train_pack([run], threads=threads, checkpoint_path=checkpoint_path, progress=progress, splits=splits)[0]
