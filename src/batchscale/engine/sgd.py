"""SGD with momentum, Nesterov and L2 weight decay, written out: the update torch.optim.SGD makes.

Why not torch.optim.SGD: its constructor imports torch._dynamo (about a second, paid by every train
job of a grid), and its per-step bookkeeping costs more than the update itself at small batch sizes.
The learning rate is an argument of `step`, since the engine sets it every step anyway.
"""

from __future__ import annotations

import torch


class SGD:
    def __init__(self, params, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.buffers: list[torch.Tensor] | None = None  # momentum buffers, created at the first step

    @torch.no_grad()
    def step(self, lr: float) -> None:
        params = [p for p in self.params if p.grad is not None]
        if len(params) != len(self.params):
            raise RuntimeError("SGD.step: some parameters have no gradient; every parameter must be used")
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.detach().clone() for g in grads]  # first step: buffer = gradient
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            if self.nesterov:
                grads = torch._foreach_add(grads, self.buffers, alpha=self.momentum)
            else:
                grads = self.buffers
        torch._foreach_add_(params, grads, alpha=-lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"buffers": self.buffers}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = state["buffers"]
