"""One training run: data on the device, seeded randperm batches, exact micro-batch accumulation.

The loop, in order, every trick named:
- the dataset is moved to the device once; a batch is `x[perm[i:i+m]]` (no DataLoader, no collation);
- each epoch draws `torch.randperm(n)` from a seeded CPU generator, and the last partial batch is
  dropped, so every step uses exactly m examples;
- a batch larger than `micro_batch` is split into equal micro-batches; each micro-batch's summed loss is
  divided by the whole batch's target count before `backward`, so the accumulated gradient equals the
  full-batch gradient (BatchNorm then normalises per micro-batch: ghost batch norm of that size);
- evaluation happens on the study's shared log-spaced grid plus the final step, in eval mode without
  gradients, on a fixed training subset and the test split;
- a non-finite loss, or a training batch loss above `divergence_factor` x the initial loss, stops the run
  as `diverged`;
- `optimizer.grad_clip`, when set, rescales the accumulated gradient to at most that global norm;
- state is checkpointed every `checkpoint_seconds` at a step boundary, and a restarted run resumes from
  it bit for bit (weights, optimizer, permutation, position, every RNG, the trace so far).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from batchscale.config import config_hash
from batchscale.data import Splits, load_dataset
from batchscale.engine import tasks
from batchscale.engine.grid import evaluation_steps
from batchscale.engine.schedule import learning_rate
from batchscale.engine.sgd import SGD
from batchscale.models import build_model

CHECKPOINT_FORMAT = 2  # bump when what a checkpoint holds changes (2: batchscale.engine.sgd.SGD buffers)
POINT_FIELDS = ("step", "epoch", "examples_seen", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time")


class MicroBatchTooLarge(RuntimeError):
    """Raised when a micro-batch does not fit in device memory."""


@dataclass
class RunResult:
    """Everything a trace records about one run."""

    run: dict
    status: str
    steps_total: int
    points: dict[str, list] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    threads: int = 1
    wall_seconds: float = 0.0
    eval_seconds: float = 0.0
    info: dict = field(default_factory=dict)


class _TerminationFlag:
    """Records SIGTERM instead of dying, so the loop can checkpoint at the next step boundary."""

    def __init__(self):
        import signal

        self.requested = False
        self._signal = signal
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        if self._previous is not None:
            self._signal.signal(self._signal.SIGTERM, self._previous)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but torch sees no CUDA device; use device: auto or cpu")
    return torch.device(requested)


class DeviceData:
    """A split's tensors on the device, with on-device normalisation and augmentation."""

    def __init__(self, splits: Splits, device: torch.device, augment: bool, seed: int):
        self.x_train = splits.train_x.to(device)
        self.y_train = splits.train_y.to(device)
        self.x_test = splits.test_x.to(device)
        self.y_test = splits.test_y.to(device)
        self.spec = splits.spec
        self.augment = augment and len(splits.spec.input_shape) == 3
        self.mean = self.std = None
        if splits.mean is not None:
            shape = (1, -1, 1, 1)
            self.mean = torch.tensor(splits.mean, device=device, dtype=torch.float32).view(shape)
            self.std = torch.tensor(splits.std, device=device, dtype=torch.float32).view(shape)
        self.augment_generator = torch.Generator(device=device).manual_seed(seed + 7919)

    def prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if self.mean is not None:
            x = (x.float() / 255.0 - self.mean) / self.std
        if train and self.augment:
            x = random_crop_flip(x, self.augment_generator)
        return x


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation, vectorised: random crop from a zero-padded image and a horizontal flip."""
    batch, _, height, width = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=x.device)
    rows = (offsets[:, 0:1] + torch.arange(height, device=x.device)).view(batch, 1, height, 1)
    cols = (offsets[:, 1:2] + torch.arange(width, device=x.device)).view(batch, 1, 1, width)
    flip = torch.rand(batch, generator=generator, device=x.device) < 0.5
    cols = torch.where(flip.view(batch, 1, 1, 1), cols.flip(-1), cols)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[torch.arange(batch, device=x.device).view(batch, 1, 1, 1), channels, rows, cols]


def evaluate(model, data: DeviceData, x: torch.Tensor, y: torch.Tensor, batch_size: int, autocast) -> dict:
    """Mean loss and accuracy (and mean IoU for segmentation) over (x, y), in eval mode."""
    spec = data.spec
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    count = 0
    confusion = None
    with torch.inference_mode(), autocast():
        for start in range(0, x.shape[0], batch_size):
            xb = data.prepare(x[start:start + batch_size], train=False)
            yb = y[start:start + batch_size]
            output = model(xb)
            loss += tasks.loss_sum(spec.task, output, yb, spec.ignore_index).double()
            correct += tasks.correct_count(spec.task, output, yb, spec.ignore_index).double().to(x.device)
            count += tasks.target_count(spec.task, yb, spec.ignore_index)
            if spec.task == "segmentation":
                matrix = tasks.confusion_matrix(output, yb, spec.num_classes, spec.ignore_index)
                confusion = matrix if confusion is None else confusion + matrix
    model.train(was_training)
    result = {"loss": float(loss) / count, "acc": float(correct) / count}
    if spec.task == "segmentation":
        result["miou"] = tasks.mean_iou(confusion)
    return result


def _autocast_factory(device: torch.device, precision: str):
    enabled = precision == "bf16" and device.type == "cuda"

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)

    return autocast


def accumulate_gradient(model, data: DeviceData, index: torch.Tensor, micro_batch: int | None, autocast,
                        train: bool = True) -> torch.Tensor:
    """Backward over `index` in micro-batches; returns the batch's mean loss (a device tensor).

    Each micro-batch contributes loss_sum / (targets in the whole batch), so the accumulated gradient is
    exactly the gradient of the full batch's mean loss.
    """
    spec = data.spec
    y_all = data.y_train[index]
    total = tasks.target_count(spec.task, y_all, spec.ignore_index)
    chunk = micro_batch if micro_batch and micro_batch < index.numel() else index.numel()
    batch_loss = 0.0
    for start in range(0, index.numel(), chunk):
        part = index[start:start + chunk]
        xb = data.prepare(data.x_train[part], train=train)
        with autocast():
            output = model(xb)
        part_loss = tasks.loss_sum(spec.task, output, y_all[start:start + chunk], spec.ignore_index) / max(total, 1)
        part_loss.backward()
        batch_loss = batch_loss + part_loss.detach()
    return batch_loss


def linear_approximation_error(model, data: DeviceData, run: dict, eval_x, eval_y, autocast,
                               generator: torch.Generator) -> float:
    """|L(w) - L(w*) - <g_m, w - w*>| at w = w* - eta0 (m/m0) g_m (paper Sec. 4.2, Fig. 2 right).

    L is the loss on the fixed training evaluation subset and g_m the gradient of a fresh batch of m
    examples, both in eval mode so that L and g_m are functions of the weights alone.
    """
    m = min(run["batch_size"], data.x_train.shape[0])
    step_size = run["eta0"] * run["batch_size"] / run["base_batch"]
    index = torch.randperm(data.x_train.shape[0], generator=generator)[:m].to(data.x_train.device)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    accumulate_gradient(model, data, index, run.get("micro_batch"), autocast, train=False)
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    loss_star = evaluate(model, data, eval_x, eval_y, run["evaluation"]["batch_size"], autocast)["loss"]
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(step_size * g)
        inner = -step_size * sum(float((g.double() * g.double()).sum()) for g in grads)
        loss_moved = evaluate(model, data, eval_x, eval_y, run["evaluation"]["batch_size"], autocast)["loss"]
        for p, s in zip(params, saved):
            p.copy_(s)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return abs(loss_moved - loss_star - inner)


def train_run(run: dict, threads: int = 1, checkpoint_path: str | Path | None = None,
              progress: bool = True, splits: Splits | None = None) -> RunResult:
    """Train one run of the grid and return its trace."""
    torch.set_num_threads(threads)
    device = pick_device(run["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per run: let cuDNN pick the fastest kernels
    autocast = _autocast_factory(device, run.get("precision", "fp32"))
    seed, m = run["seed"], run["batch_size"]
    splits = splits if splits is not None else load_dataset(run["dataset"], run["data_root"], run["download"])
    data = DeviceData(splits, device, run["dataset"].get("augment", False), seed)
    n = data.x_train.shape[0]
    if m > n:
        raise ValueError(f"batch size {m} is larger than the {n} training examples of study {run['study']!r}")
    steps_per_epoch = n // m
    steps_total = steps_per_epoch * run["epochs"]
    if run.get("max_steps"):
        steps_total = min(steps_total, run["max_steps"])
    eval_points = evaluation_steps(run["evaluation"]["points_per_decade"], steps_total)
    warmup_steps = int(round(run["warmup_epochs"] * steps_per_epoch))

    # Fixed training subset for the train loss: the same examples for every run of the study.
    subset_generator = torch.Generator().manual_seed(run["dataset"].get("split_seed", 0) + 104729)
    subset = torch.randperm(n, generator=subset_generator)[: run["evaluation"]["train_subset"]].to(device)
    eval_x, eval_y = data.x_train[subset], data.y_train[subset]

    torch.manual_seed(seed)
    model = build_model(run["model"], data.spec).to(device)
    if run.get("channels_last") and device.type == "cuda" and len(data.spec.input_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    optimizer = SGD(model.parameters(), momentum=run["optimizer"]["momentum"],
                    nesterov=run["optimizer"]["nesterov"], weight_decay=run["optimizer"]["weight_decay"])
    batch_generator = torch.Generator().manual_seed(seed)

    state = {"step": 0, "perm": None, "position": 0, "elapsed": 0.0, "eval_seconds": 0.0,
             "points": {name: [] for name in POINT_FIELDS}, "extra": {}, "initial_loss": None}
    run_hash = config_hash(run)
    checkpoint = Path(checkpoint_path) if checkpoint_path else None
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved.get("config_hash") == run_hash and saved.get("format") == CHECKPOINT_FORMAT:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            # RNG states must be CPU byte tensors, whatever map_location did to them
            batch_generator.set_state(saved["batch_generator"].cpu())
            data.augment_generator.set_state(saved["augment_generator"].cpu())
            torch.set_rng_state(saved["cpu_rng"].cpu())
            if device.type == "cuda" and saved.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(saved["cuda_rng"].cpu())
            state = saved["state"]
            print(f"resumed from {checkpoint} at step {state['step']}", file=sys.stderr)
        else:
            print(f"ignoring {checkpoint}: written for another run config or engine version", file=sys.stderr)

    def save_checkpoint():
        state["elapsed"] = time.perf_counter() - start_time
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        temporary = checkpoint.with_name(checkpoint.name + f".tmp{os.getpid()}")
        torch.save({"format": CHECKPOINT_FORMAT, "config_hash": run_hash, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "batch_generator": batch_generator.get_state(),
                    "augment_generator": data.augment_generator.get_state(), "cpu_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                    "state": state}, temporary)
        os.replace(temporary, checkpoint)

    start_time = time.perf_counter() - state["elapsed"]
    points = state["points"]

    def record(step: int) -> float:
        began = time.perf_counter()
        try:
            train = evaluate(model, data, eval_x, eval_y, run["evaluation"]["batch_size"], autocast)
            test = evaluate(model, data, data.x_test, data.y_test, run["evaluation"]["batch_size"], autocast)
        except torch.OutOfMemoryError:
            raise MicroBatchTooLarge(
                f"out of device memory evaluating {run['evaluation']['batch_size']} examples at once; "
                f"lower `evaluation.batch_size` in study {run['study']!r}") from None
        state["eval_seconds"] += time.perf_counter() - began
        values = {"step": step, "epoch": step / steps_per_epoch, "examples_seen": step * m,
                  "lr": learning_rate(max(step - 1, 0), eta0=run["eta0"], lr_peak=run["lr_peak"],
                                      warmup_steps=warmup_steps, schedule=run["schedule"], total_steps=steps_total),
                  "train_loss": train["loss"], "train_acc": train["acc"], "test_loss": test["loss"],
                  "test_acc": test["acc"], "wall_time": time.perf_counter() - start_time}
        for name, value in values.items():
            points[name].append(value)
        if data.spec.task == "language_model":
            state["extra"].setdefault("test_perplexity", []).append(math.exp(min(test["loss"], 700.0)))
        if data.spec.task == "segmentation":
            state["extra"].setdefault("test_miou", []).append(test["miou"])
        return train["loss"]

    status = "completed"
    if state["step"] == 0 and not points["step"]:
        state["initial_loss"] = record(0)
    pending = [s for s in eval_points if s > state["step"]]
    check_every = 1 if device.type == "cpu" else 25  # a CPU .item() is free; on CUDA it is a sync
    bar = tqdm(total=steps_total, initial=state["step"], file=sys.stderr, disable=not progress,
               mininterval=5.0, desc=f"{run['study']} {run['strategy']} bs{m} seed{seed}")
    last_checkpoint = time.perf_counter()
    terminate = _TerminationFlag() if checkpoint is not None else None
    model.train()
    try:
        while state["step"] < steps_total:
            if terminate is not None and terminate.requested:
                # SLURM preemption / scancel sends SIGTERM first: save what we have, then stop
                save_checkpoint()
                raise SystemExit(f"terminated at step {state['step']}; checkpoint saved to {checkpoint}")
            if state["perm"] is None or state["position"] + m > n:
                state["perm"] = torch.randperm(n, generator=batch_generator)
                state["position"] = 0
            index = state["perm"][state["position"]:state["position"] + m].to(device, non_blocking=True)
            lr = learning_rate(state["step"], eta0=run["eta0"], lr_peak=run["lr_peak"], warmup_steps=warmup_steps,
                               schedule=run["schedule"], total_steps=steps_total)
            optimizer.zero_grad()
            try:
                batch_loss = accumulate_gradient(model, data, index, run.get("micro_batch"), autocast)
            except torch.OutOfMemoryError:
                raise MicroBatchTooLarge(
                    f"out of device memory at a micro-batch of {min(run.get('micro_batch') or m, m)} examples; "
                    f"lower `micro_batch` in study {run['study']!r}") from None
            if run["optimizer"].get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(optimizer.params, run["optimizer"]["grad_clip"])
            optimizer.step(lr)
            state["step"] += 1
            state["position"] += m
            bar.update(1)
            if state["step"] % check_every == 0 or state["step"] in pending[:1]:
                value = float(batch_loss)
                if not math.isfinite(value) or value > run["divergence_factor"] * state["initial_loss"]:
                    status = "diverged"
                    record(state["step"])
                    break
            if pending and state["step"] == pending[0]:
                pending.pop(0)
                # Only a non-finite evaluation loss counts here: early in training BatchNorm's running
                # statistics lag the weights, so an eval-mode loss can spike while training is fine; the
                # size check above uses the training-mode loss of the batch.
                if not math.isfinite(record(state["step"])):
                    status = "diverged"
                    break
            if checkpoint is not None and time.perf_counter() - last_checkpoint > run["checkpoint_seconds"]:
                save_checkpoint()
                last_checkpoint = time.perf_counter()
    finally:
        bar.close()
        if terminate is not None:
            terminate.restore()

    scalars = {}
    if status == "completed":
        approx_generator = torch.Generator().manual_seed(seed + 15485863)
        scalars["linear_approx_error"] = linear_approximation_error(model, data, run, eval_x, eval_y, autocast,
                                                                    approx_generator)
    else:
        scalars["linear_approx_error"] = float("nan")
    result = RunResult(run=run, status=status, steps_total=steps_total, points={**points, **state["extra"]},
                       scalars=scalars, device=str(device), threads=threads,
                       wall_seconds=time.perf_counter() - start_time, eval_seconds=state["eval_seconds"],
                       info={"num_train": n, "num_test": int(data.x_test.shape[0]), "task": data.spec.task,
                             "steps_per_epoch": steps_per_epoch, "warmup_steps": warmup_steps,
                             "ghost_batch_size": min(run.get("micro_batch") or m, m), **splits.info})
    return result
