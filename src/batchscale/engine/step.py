"""One training step of a pack, the only one: packs, branches and the noise estimates all go through it.

A pack's runs are stacked (every tensor (R, ...)); a step of the runs still training, `ids`:
- their batches are example indices (k, m), one row per run, each augmented from the run's own stream;
- `batch_gradient` sums each run's loss over micro-batches of at most `micro_batch` examples and divides
  by the whole batch's target count, so the accumulated gradient is the full batch's (BatchNorm statistics
  then come from each micro-batch: ghost batch norm);
- `train_step` clips each run's gradient to its global norm, gives the runs not in `ids` a zero gradient
  (their optimizer leaves them untouched) and makes one optimizer update with each run's own rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from batchscale.engine import tasks
from batchscale.engine.packed_model import PackedModel
from batchscale.engine.runtime import DeviceData, autocast_factory
from batchscale.engine.state import RunState
from batchscale.errors import MicroBatchTooLarge


@dataclass
class StepParts:
    """What a step of a pack reads and updates: its stacked model, the data on the device, the optimizer,
    each run's state (schedule, random streams), mixed precision and the pack's shared step settings."""

    model: PackedModel
    data: DeviceData
    optimizer: object  # one of engine.optim.OPTIMIZERS: step(grads, lr, active), state_dict, load_state_dict
    states: list[RunState]
    autocast: Callable
    micro_batch: int | None
    grad_clip: float | None


def batch_inputs(data: DeviceData, index: torch.Tensor, states: list[RunState], ids: list[int], train: bool):
    """Inputs and targets of runs `ids` at example indices `index`.

    Args:
        data: the pack's data on the device.
        index: (k, b) training-example indices, one row per run of `ids`.
        states: every run's state; a run's augmentation draws from its own stream.
        ids: the runs (positions in the pack) the rows belong to.
        train: augment (where the dataset is augmented) or not.

    Returns:
        x (k, b, ...) prepared inputs and y (k, b, ...) targets.
    """
    k, b = index.shape
    x = data.x_train[index.flatten()]
    if train and data.augment:
        x = torch.stack([data.prepare(part, train=True, generator=states[r].augment_generator)
                         for part, r in zip(x.view(k, b, *x.shape[1:]), ids)])
    else:
        x = data.prepare(x, train=False)
        x = x.view(k, b, *x.shape[1:])
    return x, data.y_train[index]


def batch_gradient(model: PackedModel, data: DeviceData, index: torch.Tensor, states: list[RunState],
                   ids: list[int], params, buffers, micro_batch: int | None, autocast, train: bool = True):
    """Each run's mean loss and gradient on its batch, accumulated over micro-batches.

    Args:
        model: the pack's stacked model.
        data: the pack's data on the device.
        index: (k, m) training-example indices, one row per run of `ids`.
        states: every run's state (augmentation streams).
        ids: the runs of the rows of `index`.
        params, buffers: the stacked tensors to differentiate at (`PackedModel.select(ids)`); in train mode
            the buffers are updated in place (BatchNorm running statistics).
        micro_batch: at most this many examples per forward and backward (None: the whole batch).
        autocast: the pack's mixed-precision context (`autocast_factory`).
        train: train mode (dropout, BatchNorm batch statistics, augmentation) or eval mode.

    Returns:
        (k,) losses and one (k, ...) gradient per parameter: each run's mean loss over its m examples'
        targets, exact however the batch is split.
    """
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
    """Per run, torch.nn.utils.clip_grad_norm_: scale each run's gradient to at most `max_norm` global L2 norm."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)
    scale = (max_norm / (torch.linalg.vector_norm(norms, dim=1) + 1e-6)).clamp(max=1.0)
    return [g * scale.view(-1, *([1] * (g.dim() - 1))).to(g.dtype) for g in grads]


def micro_batch_too_large(states: list[RunState], micro_batch: int | None) -> MicroBatchTooLarge:
    """The one-line error for a training micro-batch that does not fit in device memory."""
    run = states[0].run
    m = run["batch_size"]
    return MicroBatchTooLarge(f"out of device memory at a micro-batch of {min(micro_batch or m, m)} examples; "
                              f"lower `micro_batch` in study {run['study']!r}")


def train_step(parts: StepParts, ids: list[int], index: torch.Tensor, rates: Sequence[float]) -> torch.Tensor:
    """One update of the runs `ids`; every other run of the pack stays as it is.

    Args:
        parts: the pack's model, data, optimizer, run states and step settings.
        ids: the runs that train at this step (positions in the pack, ascending).
        index: (len(ids), m) training-example indices, one row per run of `ids`.
        rates: the learning rate of this update for every run of the pack (ignored for runs not in `ids`).

    Returns:
        (len(ids),) each run's mean training loss on its batch, before the update.

    Raises:
        MicroBatchTooLarge: a micro-batch does not fit in device memory.
    """
    model, device = parts.model, index.device
    # float64: the optimizers cast it to the parameters' dtype (AdamW keeps its scalars in float64)
    lr = torch.tensor([float(rate) for rate in rates], dtype=torch.float64, device=device)
    active = torch.tensor([r in ids for r in range(model.runs)], device=device)
    params, buffers = model.select(ids)
    try:
        losses, grads = batch_gradient(model, parts.data, index, parts.states, ids, params, buffers,
                                       parts.micro_batch, parts.autocast)
    except torch.OutOfMemoryError:
        raise micro_batch_too_large(parts.states, parts.micro_batch) from None
    model.put_buffers(ids, buffers)
    if parts.grad_clip:
        grads = clip_gradients(grads, parts.grad_clip)
    if len(ids) < model.runs:  # inactive runs get a zero gradient, and are not updated anyway
        index_ids = torch.tensor(ids, device=device)
        grads = [torch.zeros_like(p).index_copy_(0, index_ids, g) for p, g in zip(model.params, grads)]
    parts.optimizer.step(grads, lr, active)
    return losses


def module_gradient(module: torch.nn.Module, data: DeviceData, index: torch.Tensor, micro_batch: int | None,
                    train: bool = True):
    """One model's mean loss and gradient through the engine's step, as a pack of one.

    Args:
        module: the model; its BatchNorm statistics are updated in place in train mode.
        data: the data on the device.
        index: (m,) training-example indices.
        micro_batch: at most this many examples per forward and backward (None: all at once).
        train: train mode or eval mode.

    Returns:
        The mean loss (a 0-d tensor) and a list of gradients shaped like the module's parameters.
    """
    model = PackedModel([module], data.spec)
    state = RunState(run={}, steps_per_epoch=1, steps_total=1, warmup_steps=0, eval_points=[],
                     augment_generator=data.augment_generator)
    loss, grads = batch_gradient(model, data, index[None], [state], [0], model.params, model.buffers, micro_batch,
                                 autocast_factory(index.device, "fp32"), train)
    with torch.no_grad():
        for buffer, stacked in zip(module.buffers(), model.buffers):
            buffer.copy_(stacked[0])
    return loss[0], [g[0] for g in grads]
