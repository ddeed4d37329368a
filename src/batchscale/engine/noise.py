"""The gradient noise scale at an evaluation point, for the runs of a pack at once.

At each evaluation point, in eval mode (as the train loss, so the gradient is a function of the weights
alone), on the study's fixed training evaluation subset taken as the population (definitions: docs/noise_scale.md):

- two-batch estimates of |G|^2 and tr Sigma: a big batch of `batch_big` subset examples drawn with
  replacement and the small batch nested as its head, `draws` times; their mean gradients come from the
  engine's own step (`step.batch_gradient`, vectorised over the runs, micro-batched as training);
- exact values from every per-example gradient of the subset (torch.func: vmap over the runs of vmap over
  the examples of grad) where parameters x subset size is within `exact_max_params_times_examples`; NaN
  otherwise, or where the model cannot be vmapped per example.

The draws come from a generator seeded by (run seed, step) alone, so a run's noise values do not depend on
its pack or on a resume, and no other random stream of the run moves: enabling the noise scale changes no
other number of the trace.
"""

from __future__ import annotations

import sys

import torch
from torch.func import grad, vmap

from batchscale.engine import tasks
from batchscale.engine.parts import PackParts
from batchscale.engine.step import batch_gradient

NOISE_FIELDS = ("noise_g2", "noise_trace_sigma", "noise_g2_exact", "noise_trace_sigma_exact")
NOISE_SEED_OFFSET = 6700417
EXACT_CHUNK = 256  # examples per vmapped chunk of per-example gradients


def two_batch_estimates(g2_small, g2_big, batch_small: float, batch_big: float):
    """Unbiased |G|^2 and tr Sigma from the squared norms of two mean gradients (McCandlish et al. A.1).

        |G|^2    ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
        tr Sigma ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

    Works elementwise on floats, numpy arrays or tensors; returns (g2, trace_sigma).
    """
    if not batch_big > batch_small > 0:
        raise ValueError(f"need 0 < batch_small < batch_big, got {batch_small} and {batch_big}")
    g2 = (batch_big * g2_big - batch_small * g2_small) / (batch_big - batch_small)
    trace_sigma = (g2_small - g2_big) / (1.0 / batch_small - 1.0 / batch_big)
    return g2, trace_sigma


def noise_generator(seed: int, step: int) -> torch.Generator:
    """The draws of run `seed` at `step`: a stream of its own, independent of the pack and of resumes."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) + NOISE_SEED_OFFSET) % (2 ** 63))


def squared_norms(grads) -> torch.Tensor:
    """|g|^2 per run of stacked gradients (each (k, ...)), in float64."""
    return sum(g.double().flatten(1).pow(2).sum(1) for g in grads)


def two_batch_points(gradient, subset: torch.Tensor, seeds: list[int], step: int, cfg: dict):
    """Two-batch estimates for k runs at one evaluation point.

    Args:
        gradient: index (k, b) -> the k runs' mean gradients on those examples (stacked, one per parameter).
        subset: the training evaluation subset (indices into the training split), the population drawn from.
        seeds: each run's seed; its draws come from `noise_generator(seed, step)`, with replacement.
        step: the evaluation point.
        cfg: the study's noise_scale settings (batch_small, batch_big, draws).

    Returns:
        (g2, trace_sigma), float64 tensors (k,).
    """
    n, small, big, draws = subset.numel(), int(cfg["batch_small"]), int(cfg["batch_big"]), int(cfg["draws"])
    generators = [noise_generator(seed, step) for seed in seeds]
    g2_small = g2_big = 0.0
    for _ in range(draws):
        drawn = torch.stack([torch.randint(n, (big,), generator=g) for g in generators]).to(subset.device)
        index = subset[drawn]
        g2_small = g2_small + squared_norms(gradient(index[:, :small])) / draws
        g2_big = g2_big + squared_norms(gradient(index)) / draws
    return two_batch_estimates(g2_small, g2_big, small, big)


def exact_is_cheap(n_params: int, n_examples: int, budget: float) -> bool:
    """Per-example gradients of one run hold parameters x examples floats at once: within the budget?"""
    return n_params * n_examples <= budget


def per_example_noise(model, params, buffers, x, y, task: str, ignore_index, ddof: int = 0):
    """Exact (g2, trace_sigma), float64 (k,), of stacked runs `params` on prepared inputs x (n, ...).

    Per-example losses are means over each example's own targets (tokens, pixels); centred before squaring."""
    totals = torch.tensor([max(tasks.target_count(task, y[i:i + 1], ignore_index), 1) for i in range(y.shape[0])],
                          dtype=torch.float32, device=x.device)
    model.base.eval()

    def one_example(p, b, xi, yi, total):
        return model.run_loss(p, b, xi.unsqueeze(0), yi.unsqueeze(0), total)

    per_example = vmap(grad(one_example), in_dims=(None, None, 0, 0, 0))
    per_run = vmap(per_example, in_dims=(0, 0, None, None, None), randomness="different")
    chunks = []
    for start in range(0, x.shape[0], EXACT_CHUNK):
        part = per_run(tuple(params), tuple(buffers), x[start:start + EXACT_CHUNK], y[start:start + EXACT_CHUNK],
                       totals[start:start + EXACT_CHUNK])
        chunks.append(torch.cat([g.detach().flatten(2) for g in part], dim=2))
    g = torch.cat(chunks, dim=1).double()  # (k, n, P)
    mean = g.mean(dim=1, keepdim=True)
    return (mean ** 2).sum(dim=(1, 2)), ((g - mean) ** 2).sum(dim=(1, 2)) / (g.shape[1] - ddof)


def exact_points(model, params, buffers, x, y, task: str, ignore_index, budget: float, label: str = ""):
    """Exact (g2, trace_sigma) lists for the k stacked runs, all runs in one vmap when k x P x n fits the
    budget, run by run when only P x n does, NaN when not even that (or the model cannot be vmapped)."""
    k = params[0].shape[0]
    nan = [float("nan")] * k
    n_params = sum(p[0].numel() for p in params)
    if not exact_is_cheap(n_params, x.shape[0], budget):
        return nan, nan
    try:
        if exact_is_cheap(k * n_params, x.shape[0], budget):
            g2, trace = per_example_noise(model, params, buffers, x, y, task, ignore_index)
            return g2.tolist(), trace.tolist()
        g2, trace = [], []
        for j in range(k):
            one = per_example_noise(model, [p[j:j + 1] for p in params], [b[j:j + 1] for b in buffers], x, y, task,
                                    ignore_index)
            g2.append(float(one[0][0]))
            trace.append(float(one[1][0]))
        return g2, trace
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # vmap's failures have many types; the trace then says NaN
        print(f"{label}: no exact noise scale ({type(err).__name__}: {str(err).strip()[:160]})", file=sys.stderr)
        return nan, nan


def noise_columns(parts: PackParts, ids: list[int], params, buffers, step: int) -> dict[str, list[float]]:
    """The noise-scale datasets of runs `ids` at one evaluation point.

    Args:
        parts: the pack's parts (model, data, evaluation subset, noise_scale settings in its runs).
        ids: the runs evaluated (positions in the pack).
        params, buffers: their weights, as `PackedModel.select(ids)` gives them (the whole stack when the
            pack trains run by run).
        step: the evaluation point, which seeds each run's draws.

    Returns:
        {name: one float per run of `ids`} for every name of NOISE_FIELDS.
    """
    cfg, data = parts.first["noise_scale"], parts.data

    def gradient(index):
        return batch_gradient(parts.model, data, index, parts.states, ids, params, buffers, parts.micro_batch,
                              parts.autocast, train=False)[1]

    g2, trace = two_batch_points(gradient, parts.subset, [parts.states[r].run["seed"] for r in ids], step, cfg)
    if params[0].shape[0] != len(ids):  # run by run, select() gave the whole stack
        index_ids = torch.tensor(ids, device=parts.device)
        params, buffers = [p.index_select(0, index_ids) for p in params], [b.index_select(0, index_ids)
                                                                           for b in buffers]
    exact = exact_points(parts.model, params, buffers, data.prepare(parts.eval_x, train=False), parts.eval_y,
                         data.spec.task, data.spec.ignore_index, cfg["exact_max_params_times_examples"], parts.label)
    columns = (g2.tolist(), trace.tolist(), exact[0], exact[1])
    return {name: [float(value) for value in column] for name, column in zip(NOISE_FIELDS, columns)}

