"""AdamW for a pack of runs: the update torch.optim.AdamW makes, with hyperparameters per run.

Every parameter tensor is stacked over the R runs of a pack (shape (R, *shape)); learning rate, betas,
eps and weight decay are (R,) tensors, broadcast over each tensor's trailing dimensions, so one call
updates every run with its own hyperparameters. Each run keeps its own step count for the bias
corrections, and an `active` mask leaves a run untouched (a diverged or finished run stops while the
others go on).

The arithmetic follows torch.optim.AdamW (decoupled weight decay, Loshchilov & Hutter 2019) operation
for operation:

    p   <- p * (1 - lr * wd)
    m   <- m + (1 - beta1) * (g - m)               (lerp)
    v   <- v * beta2 + (1 - beta2) * g * g
    p   <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

The per-run scalars (bias corrections, step size, decay factor) are computed in float64, as torch
computes them in Python floats, and cast to the parameters' dtype only when they meet a tensor.

Why not torch.optim.AdamW: it has one set of hyperparameters per parameter group, not per slice of a
stacked tensor, and importing torch.optim pulls in torch._dynamo (about a second per train job).
"""

from __future__ import annotations

import torch

HYPERPARAMETERS = ("beta1", "beta2", "eps", "weight_decay")


def _per_run(value, runs: int, device: torch.device, name: str) -> torch.Tensor:
    """A float64 (R,) tensor on `device` from a tensor, a sequence of R numbers, or one number for all."""
    tensor = torch.as_tensor(value, dtype=torch.float64, device=device)
    if tensor.ndim == 0:
        tensor = tensor.expand(runs)
    if tensor.shape != (runs,):
        raise ValueError(f"PackedAdamW: {name} must be one number or one per run ({runs}), got shape {tuple(tensor.shape)}")
    return tensor.clone()


def _over_trailing(per_run: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View an (R,) tensor as (R, 1, ..., 1) in `like`'s dtype, so it broadcasts over one run's slice."""
    return per_run.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class PackedAdamW:
    """torch.optim.AdamW's update for every run of a pack at once, each run with its own hyperparameters."""

    def __init__(self, params, *, beta1, beta2, eps, weight_decay):
        self.params = list(params)
        if not self.params:
            raise ValueError("PackedAdamW: no parameters")
        self.runs = self.params[0].shape[0]
        self.device = self.params[0].device
        for p in self.params:
            if p.ndim == 0 or p.shape[0] != self.runs:
                raise ValueError(f"PackedAdamW: every parameter must be stacked over {self.runs} runs, got shape {tuple(p.shape)}")
        self.beta1 = _per_run(beta1, self.runs, self.device, "beta1")
        self.beta2 = _per_run(beta2, self.runs, self.device, "beta2")
        self.eps = _per_run(eps, self.runs, self.device, "eps")
        self.weight_decay = _per_run(weight_decay, self.runs, self.device, "weight_decay")
        for name in ("beta1", "beta2"):
            beta = getattr(self, name)
            if bool(((beta < 0) | (beta >= 1)).any()):
                raise ValueError(f"PackedAdamW: {name} must lie in [0, 1), got {beta.tolist()}")
        self.steps = torch.zeros(self.runs, dtype=torch.int64, device=self.device)  # updates made, per run
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, grads, lr, active) -> None:
        """One update of the active runs; an inactive run's parameters, moments and step count stay as they are.

        grads: one tensor per parameter, shaped like it. lr: (R,) learning rates of this step.
        active: (R,) bool. A gradient of an inactive run is never read into any result, so it may be NaN.
        """
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"PackedAdamW.step: {len(grads)} gradients for {len(self.params)} parameters")
        lr = _per_run(lr, self.runs, self.device, "lr")
        active = torch.as_tensor(active, dtype=torch.bool, device=self.device)
        if active.shape != (self.runs,):
            raise ValueError(f"PackedAdamW.step: active must have shape ({self.runs},), got {tuple(active.shape)}")

        steps = self.steps + active.to(torch.int64)
        # An inactive run that never stepped has t = 0, where the bias corrections are 0; its (discarded)
        # update must not be computed from a division by zero, so its t counts as 1 here.
        t = steps.clamp(min=1).to(torch.float64)
        decay = 1 - lr * self.weight_decay
        step_size = lr / (1 - self.beta1 ** t)
        bias_correction2_sqrt = (1 - self.beta2 ** t).sqrt()

        for i, (param, grad) in enumerate(zip(self.params, grads)):
            if grad.shape != param.shape:
                raise ValueError(f"PackedAdamW.step: gradient {i} has shape {tuple(grad.shape)}, parameter {tuple(param.shape)}")
            keep = active.view(-1, *([1] * (param.ndim - 1)))
            exp_avg = self.exp_avg[i].lerp(grad, _over_trailing(1 - self.beta1, param))
            exp_avg_sq = self.exp_avg_sq[i] * _over_trailing(self.beta2, param)
            exp_avg_sq += _over_trailing(1 - self.beta2, param) * grad * grad  # (c * g) * g, as addcmul_ evaluates it
            denom = exp_avg_sq.sqrt() / _over_trailing(bias_correction2_sqrt, param) + _over_trailing(self.eps, param)
            updated = param * _over_trailing(decay, param) - _over_trailing(step_size, param) * exp_avg / denom
            # torch.where, not arithmetic masking: a NaN in an inactive run's update must not leak through
            param.copy_(torch.where(keep, updated, param))
            self.exp_avg[i] = torch.where(keep, exp_avg, self.exp_avg[i])
            self.exp_avg_sq[i] = torch.where(keep, exp_avg_sq, self.exp_avg_sq[i])
        self.steps = steps

    def state_dict(self) -> dict:
        """Step counts, moments and hyperparameters: tensors and lists of tensors only (torch.load weights_only safe).

        The moments are replaced, not updated in place, by `step`, so a state dict taken now stays as it is.
        """
        return {"steps": self.steps, "exp_avg": list(self.exp_avg), "exp_avg_sq": list(self.exp_avg_sq),
                **{name: getattr(self, name) for name in HYPERPARAMETERS}}

    def load_state_dict(self, state: dict) -> None:
        """Restore step counts and moments; the hyperparameters must be the ones this optimizer was built with."""
        for name in HYPERPARAMETERS:
            saved = torch.as_tensor(state[name], dtype=torch.float64, device=self.device)
            if not torch.equal(saved, getattr(self, name)):
                raise ValueError(f"PackedAdamW.load_state_dict: the saved {name} {saved.tolist()} differs from "
                                 f"this optimizer's {getattr(self, name).tolist()}")
        for key in ("exp_avg", "exp_avg_sq"):
            if len(state[key]) != len(self.params):
                raise ValueError(f"PackedAdamW.load_state_dict: {len(state[key])} saved {key} for {len(self.params)} parameters")
            for saved, param in zip(state[key], self.params):
                if saved.shape != param.shape:
                    raise ValueError(f"PackedAdamW.load_state_dict: saved {key} of shape {tuple(saved.shape)} "
                                     f"for a parameter of shape {tuple(param.shape)}")
        self.steps = state["steps"].to(device=self.device, dtype=torch.int64).clone()
        self.exp_avg = [s.to(device=p.device, dtype=p.dtype).clone() for s, p in zip(state["exp_avg"], self.params)]
        self.exp_avg_sq = [s.to(device=p.device, dtype=p.dtype).clone() for s, p in zip(state["exp_avg_sq"], self.params)]
