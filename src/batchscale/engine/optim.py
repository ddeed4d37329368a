"""Optimizers over a pack: every parameter tensor is stacked over the R runs of the pack, shape (R, ...).

Each run has its own hyperparameters (float tensors of shape (R,)) and its own state; a run that is not
active (diverged or finished) is not touched at all. The update is the one torch.optim.SGD makes, run by
run: weight decay adds wd*w to the gradient, the first momentum buffer is the gradient itself, then
buf = momentum*buf + grad, and the step is lr*buf (lr*(grad + momentum*buf) with Nesterov).

AdamW (engine/adamw.py) makes torch.optim.AdamW's update the same way.

An optimizer is chosen by `run["optimizer"]["name"]` from OPTIMIZERS below; adding one is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from batchscale.engine.adamw import PackedAdamW


def _per_run(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (R,) tensor shaped to broadcast against a stacked (R, ...) tensor."""
    return value.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class PackedSGD:
    """torch.optim.SGD's update (momentum, Nesterov, weight decay) for every run of a pack at once."""

    def __init__(self, params, *, momentum, weight_decay, nesterov: bool = False):
        self.params = list(params)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = bool(nesterov)
        runs = self.params[0].shape[0]
        device = self.params[0].device
        self.buffers = [torch.zeros_like(p) for p in self.params]
        # the constant hyperparameters, shaped once per parameter tensor
        self._momentum = [_per_run(torch.as_tensor(momentum, device=device), p) for p in self.params]
        self._weight_decay = [_per_run(torch.as_tensor(weight_decay, device=device), p) for p in self.params]
        self.started = torch.zeros(runs, dtype=torch.bool, device=device)  # a run's first step sets buf = grad

    @torch.no_grad()
    def step(self, grads, lr, active) -> None:
        """One update of the active runs.

        Args:
            grads: one (R, ...) gradient per parameter.
            lr: (R,) learning rates of this update.
            active: (R,) bool; an inactive run's weights and momentum buffer stay as they are.
        """
        # On the CPU, checking that every run is active and started is free, and lets the common step update
        # in place; the general step (any mask; always on CUDA, where checking would synchronise) gives the
        # same numbers through torch.where.
        if active.device.type == "cpu" and bool(active.all()) and bool(self.started.all()):
            for p, g, buf, momentum, decay in zip(self.params, grads, self.buffers, self._momentum,
                                                  self._weight_decay):
                d = g + decay * p
                buf.mul_(momentum).add_(d)
                p.sub_(_per_run(lr, p) * (d + momentum * buf if self.nesterov else buf))
            return
        first = (~self.started).view(-1)
        for p, g, buf, momentum, decay in zip(self.params, grads, self.buffers, self._momentum, self._weight_decay):
            keep = _per_run(active, p).bool()
            d = g + decay * p
            new_buf = torch.where(_per_run(first, p).bool(), d, momentum * buf + d)
            update = d + momentum * new_buf if self.nesterov else new_buf
            buf.copy_(torch.where(keep, new_buf, buf))
            p.copy_(torch.where(keep, p - _per_run(lr, p) * update, p))
        self.started |= active

    def state_dict(self) -> dict:
        """Momentum buffers and which runs have stepped (copies)."""
        return {"buffers": [b.clone() for b in self.buffers], "started": self.started.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        for buf, saved in zip(self.buffers, state["buffers"]):
            buf.copy_(saved)
        self.started.copy_(state["started"])


@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer class, its per-run float hyperparameters, and those the whole pack must share."""

    cls: type
    per_run: tuple[str, ...]
    shared: tuple[str, ...] = ()


OPTIMIZERS = {
    "sgd": OptimizerEntry(PackedSGD, per_run=("momentum", "weight_decay"), shared=("nesterov",)),
    "adamw": OptimizerEntry(PackedAdamW, per_run=("beta1", "beta2", "eps", "weight_decay")),
}


def build_optimizer(runs: list[dict], params: list[torch.Tensor]):
    """The pack's optimizer, from each run's `optimizer` settings (name defaults to sgd)."""
    names = {run["optimizer"].get("name", "sgd") for run in runs}
    if len(names) != 1:
        raise ValueError(f"a pack needs one optimizer; its runs ask for {sorted(names)}")
    name = names.pop()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name {name!r} is not known; known: {', '.join(sorted(OPTIMIZERS))}")
    entry = OPTIMIZERS[name]
    # float64 whatever the parameters' dtype: each optimizer casts where a value meets a tensor (AdamW keeps
    # its betas in float64 for the bias corrections, as torch computes them in Python floats)
    device = params[0].device
    kwargs = {key: torch.tensor([float(run["optimizer"][key]) for run in runs], dtype=torch.float64, device=device)
              for key in entry.per_run}
    for key in entry.shared:
        values = {run["optimizer"].get(key) for run in runs}
        if len(values) != 1:
            raise ValueError(f"optimizer.{key} must be the same for every run of a pack, got {sorted(values)}")
        kwargs[key] = values.pop()
    return entry.cls(params, **kwargs)
