"""R copies of one architecture with their parameters and buffers stacked over runs: shape (R, ...).

The vectorised path runs one step for every run at once: functional_call of the architecture inside vmap
(torch.func) for the forward and the loss, then one backward of the summed losses, which gives each run its
own gradient since the runs share no weights. BatchNorm running statistics are stacked buffers that each
run's forward updates in place, which vmap handles because every buffer is batched over the runs. The
run-by-run path is a plain forward and backward of each run's own module, whose parameters and buffers are
views of the stacked tensors: for models vmap cannot handle (data-dependent Python control flow, `.item()`,
state outside parameters and buffers) and for packs too small to repay vmap's cost.
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from batchscale.engine import tasks
from batchscale.models import build_model


def build_packed_model(runs: list[dict], spec, device: torch.device, channels_last: bool = False) -> "PackedModel":
    """Each run's model with its own initial weights (those of the run trained alone), stacked."""
    modules = []
    for run in runs:
        torch.manual_seed(run["seed"])
        module = build_model(run["model"], spec).to(device)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        modules.append(module)
    return PackedModel(modules, spec)


class PackedModel:
    """The runs' models of a pack, their parameters and buffers stacked (see the module docstring)."""

    def __init__(self, modules: list[torch.nn.Module], spec):
        params, buffers = stack_module_state(modules)
        self.names, self.params = list(params), [p.detach() for p in params.values()]
        self.buffer_names, self.buffers = list(buffers), list(buffers.values())
        self.modules = modules
        self.base = copy.deepcopy(modules[0]).to("meta")  # the architecture, without storage
        self.task, self.ignore_index = spec.task, spec.ignore_index
        self.vectorised = True
        self.vectorised_eval = True  # some models (nn.LSTM without autograd) vmap in training only
        # "forward": vmap(forward + loss), then one backward; "grad": vmap(grad(forward + loss)), for models
        # whose operations vmap batches only when torch.func.grad decomposes them (nn.LSTM)
        self.transform = "forward"
        self._bind_modules()

    def _bind_modules(self) -> None:
        """Make each run's module use views of the stacked tensors as its parameters and buffers, so the
        run-by-run path is a plain forward and backward whose updates land in the pack's tensors."""
        for r, module in enumerate(self.modules):
            slot = {id(p): i for i, (_, p) in enumerate(module.named_parameters())}
            bound = {}
            for name, p in list(module.named_parameters(remove_duplicate=False)):  # tied weights: every alias
                i = slot[id(p)]
                bound.setdefault(i, torch.nn.Parameter(self.params[i][r], requires_grad=p.requires_grad))
                owner, _, attr = name.rpartition(".")
                setattr(module.get_submodule(owner), attr, bound[i])
            for (name, _), stacked in zip(list(module.named_buffers()), self.buffers):
                owner, _, attr = name.rpartition(".")
                module.get_submodule(owner)._buffers[attr] = stacked[r]

    @property
    def runs(self) -> int:
        """How many runs the pack has."""
        return self.params[0].shape[0]

    # ---- one run, functionally (what vmap maps over) ----

    def _call(self, module, params, buffers, x):
        return functional_call(module, (dict(zip(self.names, params)), dict(zip(self.buffer_names, buffers))), (x,))

    def run_loss(self, params, buffers, x, y, total):
        """One run's summed loss over x divided by `total`, a function of its (params, buffers) that vmap maps."""
        return tasks.loss_sum(self.task, self._call(self.base, params, buffers, x), y, self.ignore_index) / total

    # ---- over the runs of a pack ----

    def gradients(self, params, buffers, ids, x, y, totals, train: bool, autocast):
        """Per-run loss (k,) and gradients (each (k, ...)) of sum-loss/total on x (k, b, ...), y (k, b, ...).

        In train mode the buffers given are updated in place (BatchNorm running statistics)."""
        if self.vectorised and self.transform == "grad":  # models whose forward vmaps only under grad (nn.LSTM)
            self.base.train(train)
            with autocast():
                grads, losses = vmap(grad_and_value(self.run_loss), randomness="different")(
                    tuple(params), tuple(buffers), x, y, totals)
            return losses.detach(), list(grads)
        if self.vectorised:
            # vmap over the forward and the loss only; one ordinary backward of the summed losses gives each
            # run its own gradient (the runs share no weights), at half the cost of vmap(grad(...))
            self.base.train(train)
            leaves = [p.detach().requires_grad_() for p in params]
            with autocast():
                losses = vmap(self.run_loss, randomness="different")(tuple(leaves), tuple(buffers), x, y, totals)
            grads = torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
            return losses.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        losses, grads = [], [[] for _ in params]
        own = params is self.params
        for j, r in enumerate(ids):
            module = self.modules[r]
            if module.training != train:
                module.train(train)
            if own:  # the module's own (bound) weights: a plain forward and backward
                weights = list(module.parameters())
                with autocast():
                    loss = tasks.loss_sum(self.task, module(x[j]), y[j], self.ignore_index) / totals[j]
                for slot, g, weight in zip(grads, torch.autograd.grad(loss, weights, allow_unused=True), weights):
                    slot.append(torch.zeros_like(weight) if g is None else g)
                losses.append(loss.detach())
                continue
            at = r if params[0].shape[0] == self.runs else j  # the full stack, or a selection of runs `ids`
            leaves = [p[at].detach().requires_grad_() for p in params]
            with autocast():
                output = self._call(module, leaves, [b[at] for b in buffers], x[j])
            loss = tasks.loss_sum(self.task, output, y[j], self.ignore_index) / totals[j]
            for slot, g, leaf in zip(grads, torch.autograd.grad(loss, leaves, allow_unused=True), leaves):
                slot.append(torch.zeros_like(leaf) if g is None else g)
            losses.append(loss.detach())
        return torch.stack(losses), [torch.stack(g) for g in grads]

    @torch.no_grad()
    def outputs(self, params, buffers, ids, x, autocast):
        """Eval-mode outputs of runs `ids` on one shared input batch: (k, b, ...)."""
        if self.vectorised and self.vectorised_eval:
            self.base.eval()
            with autocast():
                return vmap(lambda p, b: self._call(self.base, p, b, x), randomness="different")(
                    tuple(params), tuple(buffers))
        result = []
        for j, r in enumerate(ids):
            self.modules[r].eval()
            at = r if params[0].shape[0] == self.runs else j
            with autocast():
                result.append(self._call(self.modules[r], [p[at] for p in params], [b[at] for b in buffers], x))
        return torch.stack(result)

    def select(self, ids: list[int]):
        """Parameters and buffers of runs `ids` (the stacked tensors themselves when that is every run)."""
        if ids == list(range(self.runs)) or not self.vectorised:  # run by run: indexed where used
            return self.params, self.buffers
        index = torch.tensor(ids, device=self.params[0].device)
        return [p.index_select(0, index) for p in self.params], [b.index_select(0, index) for b in self.buffers]

    def put_buffers(self, ids: list[int], buffers) -> None:
        """Write back the buffers of runs `ids` after a training step on a selection."""
        if ids == list(range(self.runs)) or not self.vectorised:
            return
        index = torch.tensor(ids, device=self.params[0].device)
        for stacked, part in zip(self.buffers, buffers):
            stacked.index_copy_(0, index, part)

    def check_vectorising(self, x, y, totals, autocast) -> str | None:
        """Try one vectorised step on a copy; None if it runs and matches the run-by-run gradient, else why not.

        A model vmap cannot handle either raises, or (in-place state outside its buffers) gives another
        gradient; both send the pack down the sequential path instead of giving a silent wrong answer."""
        devices = [self.params[0].device] if self.params[0].device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the trial must not move any random stream
            return self._check_vectorising(x, y, totals, autocast)

    def _check_vectorising(self, x, y, totals, autocast) -> str | None:
        ids = list(range(self.runs))
        try:
            try:
                self.gradients(self.params, [b.clone() for b in self.buffers], ids, x, y, totals, True, autocast)
            except torch.OutOfMemoryError:
                raise
            except Exception:
                self.transform = "grad"
                self.gradients(self.params, [b.clone() for b in self.buffers], ids, x, y, totals, True, autocast)
            # compared in eval mode, where no dropout draws differ between the two paths
            losses, grads = self.gradients(self.params, self.buffers, ids, x, y, totals, False, autocast)
        except torch.OutOfMemoryError:
            raise  # not a limit of vmap: the caller names the setting to lower
        except Exception as err:  # vmap's failures have many types; all mean "not vectorisable"
            return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
        self.vectorised = False
        try:
            ref_losses, ref_grads = self.gradients(self.params, self.buffers, ids, x, y, totals, False, autocast)
        finally:
            self.vectorised = True
        worst = max(float((g - r).norm() / r.norm().clamp_min(1e-30)) for g, r in zip(grads, ref_grads))
        worst = max(worst, float(((losses - ref_losses).abs() / ref_losses.abs().clamp_min(1e-30)).max()))
        tolerance = 1e-6 if self.params[0].dtype == torch.float64 else 1e-3
        if not worst <= tolerance:
            return f"the vectorised gradient differs from the run-by-run one (relative {worst:.1e})"
        try:
            outputs = self.outputs(self.params, self.buffers, ids, x[0], autocast)
            self.vectorised_eval = False
            reference = self.outputs(self.params, self.buffers, ids, x[0], autocast)
            self.vectorised_eval = bool(float((outputs - reference).norm() / reference.norm()) <= tolerance)
        except Exception:
            self.vectorised_eval = False
        return None
