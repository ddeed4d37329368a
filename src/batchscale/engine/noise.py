"""The gradient noise scale at an evaluation point, for the runs of a pack at once.

At each evaluation point, in eval mode (as the train loss, so the gradient is a function of the weights
alone), on the study's fixed training evaluation subset of n examples taken as the population (definitions
and derivations: docs/noise_scale.md):

- two-batch estimates of |G|^2 and tr Sigma (n convention): a big batch of `batch_big` subset examples drawn
  **without replacement** and the small batch nested as its head, with the finite-population correction
  E|G_b|^2 = |G|^2 + c(b) tr Sigma, c(b) = (n - b) / (b (n - 1)); their mean gradients come from the engine's
  own step (`step.batch_gradient`, vectorised over the runs, micro-batched as training).
  `batch_big: auto` keeps the big batch above the run's current B_simple (big_factor x the estimate of its
  last HISTORY_POINTS points, a power of two in [4 batch_small, n]; the whole subset while no estimate is valid), and
  `draws: auto` draws until B_simple's estimated relative standard error is within `rel_error` (at least
  MIN_DRAWS, at most `max_draws`); the batch and draws used are traced (noise_batch_big, noise_draws).
- exact values from every per-example gradient of the subset (torch.func: vmap over the runs of vmap over
  the examples of grad) where parameters x subset size is within `exact_max_params_times_examples`; NaN
  otherwise, or where the model cannot be vmapped per example.

The draws come from a generator seeded by (run seed, step) alone and the batch size from the run's own
trace, so a run's noise values do not depend on its pack or on a resume, and no other random stream of the
run moves: enabling the noise scale changes no other number of the trace.
"""

from __future__ import annotations

import math
import sys

import torch
from torch.func import grad, vmap

from batchscale.engine.parts import PackParts
from batchscale.engine.step import batch_gradient

NOISE_FIELDS = ("noise_g2", "noise_trace_sigma", "noise_g2_exact", "noise_trace_sigma_exact")
# added beside them: how each point's two-batch estimate was made
SAMPLING_FIELDS = ("noise_batch_big", "noise_draws")
NOISE_SEED_OFFSET = 6700417
EXACT_CHUNK = 256  # examples per vmapped chunk of per-example gradients (all that is held at once)
MIN_DRAWS = 3  # draws: auto never stops before this many (a standard error needs a spread)
HISTORY_POINTS = 3  # batch_big: auto reads the run's current B_simple from its last this many points
DEFAULTS = {"batch_big": "auto", "big_factor": 4.0, "draws": "auto", "rel_error": 0.2, "max_draws": 32,
            "exact_max_params_times_examples": 1.0e6}


def fpc_factor(batch: float, population: float | None):
    """c(b): E|G_b|^2 = |G|^2 + c(b) tr Sigma for the mean of b examples of a population of n.

    Drawn without replacement from n examples (tr Sigma in the n convention), c(b) = (n - b) / (b (n - 1)),
    0 for the whole population; with replacement (population None) c(b) = 1/b."""
    if population is None:
        return 1.0 / batch
    if not 0 < batch <= population or population < 2:
        raise ValueError(f"need 0 < batch <= n and n >= 2, got batch {batch} of n = {population}")
    return (population - batch) / (batch * (population - 1.0))


def two_batch_estimates(g2_small, g2_big, batch_small: float, batch_big: float, population: float | None = None):
    """Unbiased |G|^2 and tr Sigma from the squared norms of two mean gradients (McCandlish et al. A.1).

    With c = fpc_factor (1/B with replacement, population None):

        |G|^2    ~ (c_small |G_big|^2 - c_big |G_small|^2) / (c_small - c_big)
        tr Sigma ~ (|G_small|^2 - |G_big|^2) / (c_small - c_big)

    which with replacement is (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small) and
    (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big). Works elementwise on floats, numpy arrays or tensors.

    Returns:
        (g2, trace_sigma).
    """
    if not batch_big > batch_small > 0:
        raise ValueError(f"need 0 < batch_small < batch_big, got {batch_small} and {batch_big}")
    c_small, c_big = fpc_factor(batch_small, population), fpc_factor(batch_big, population)
    g2 = (c_small * g2_big - c_big * g2_small) / (c_small - c_big)
    trace_sigma = (g2_small - g2_big) / (c_small - c_big)
    return g2, trace_sigma


def noise_generator(seed: int, step: int) -> torch.Generator:
    """The draws of run `seed` at `step`: a stream of its own, independent of the pack and of resumes."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) + NOISE_SEED_OFFSET) % (2 ** 63))


def squared_norms(grads) -> torch.Tensor:
    """|g|^2 per run of stacked gradients (each (k, ...)), in float64."""
    return sum(g.double().flatten(1).pow(2).sum(1) for g in grads)


def settings(cfg: dict) -> dict:
    """The study's noise_scale block with the sampling keys' defaults filled in."""
    return {**DEFAULTS, **{key: value for key, value in cfg.items() if value is not None}}


def previous_b_simple(points: dict, window: int) -> float:
    """The run's current B_simple from its last `window` traced points: the exact values where finite, else
    the two-batch ones, as a ratio of means; NaN when none is valid (no point yet, or mean |G|^2 <= 0)."""
    for g2_name, trace_name in (("noise_g2_exact", "noise_trace_sigma_exact"), ("noise_g2", "noise_trace_sigma")):
        pairs = [(g, t) for g, t in zip(points.get(g2_name, [])[-window:], points.get(trace_name, [])[-window:])
                 if math.isfinite(g) and math.isfinite(t)]
        if pairs:
            g2, trace = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
            return trace / g2 if g2 > 0 and trace > 0 else float("nan")
    return float("nan")


def choose_batch_big(cfg: dict, b_simple: float, n: int) -> int:
    """The big batch of a point: the configured integer, or (auto) big_factor x the current B_simple rounded
    up to a power of two and clipped to [4 batch_small, n]; the whole subset n when B_simple is unknown."""
    small = int(cfg["batch_small"])
    if cfg["batch_big"] != "auto":
        return min(int(cfg["batch_big"]), n)
    if not (math.isfinite(b_simple) and b_simple > 0):
        return n
    target = max(float(cfg["big_factor"]) * b_simple, 4.0 * small)
    return int(min(2 ** math.ceil(math.log2(target)), n))


def relative_error(g2_draws: torch.Tensor, trace_draws: torch.Tensor) -> torch.Tensor:
    """Estimated relative standard error of B_simple = mean(tr Sigma) / mean(|G|^2) over d draws (d, k), by
    the delta method; inf where a mean is <= 0 or fewer than 2 draws."""
    d = g2_draws.shape[0]
    if d < 2:
        return torch.full(g2_draws.shape[1:], math.inf, dtype=torch.float64)
    mg, mt = g2_draws.mean(0), trace_draws.mean(0)
    vg, vt = g2_draws.var(0), trace_draws.var(0)
    cov = ((g2_draws - mg) * (trace_draws - mt)).sum(0) / (d - 1)
    rel2 = (vt / mt ** 2 + vg / mg ** 2 - 2 * cov / (mt * mg)) / d
    ok = (mg > 0) & (mt > 0)
    return torch.where(ok, rel2.clamp(min=0).sqrt(), torch.full_like(mg, math.inf))


def _run_estimate(small_norms: list[float], big_norms: list[float], small: int, big: int, n: int):
    """(g2, trace_sigma, relative error of their ratio) of one run from its draws' squared norms."""
    s_small = torch.tensor(small_norms, dtype=torch.float64)
    s_big = torch.tensor(big_norms, dtype=torch.float64)
    g2_draws, trace_draws = two_batch_estimates(s_small, s_big, small, big, n)
    return float(g2_draws.mean()), float(trace_draws.mean()), float(relative_error(g2_draws[:, None],
                                                                                    trace_draws[:, None])[0])


def group_points(gradient, subset: torch.Tensor, generators, positions: list[int], big: int, cfg: dict):
    """Two-batch estimates of the runs at `positions`, which share the big batch `big`.

    Each run draws its own batches (without replacement, the small one the head of the big one) from its own
    generator, and with `draws: auto` stops on its own once the relative error of its B_simple is within
    `rel_error` (after MIN_DRAWS, at most `max_draws`), so its values do not depend on the other runs. When the
    big batch is the whole subset its mean gradient is the same at every draw and is computed once.

    Returns:
        {position: (g2, trace_sigma, draws)}.
    """
    n, small = subset.numel(), int(cfg["batch_small"])
    auto = cfg["draws"] == "auto"
    most = int(cfg["max_draws"]) if auto else int(cfg["draws"])
    fewest = min(MIN_DRAWS, most) if auto else most
    whole = None
    if big >= n:
        whole = squared_norms(gradient(positions, subset.expand(len(positions), n)))
    norms = {p: ([], []) for p in positions}
    active = list(range(len(positions)))
    out = {}
    for d in range(most):
        perms = [torch.randperm(n, generator=generators[j])[:big] for j in active]
        index = subset[torch.stack(perms).to(subset.device)]
        chosen = [positions[j] for j in active]
        s_small = squared_norms(gradient(chosen, index[:, :small])).tolist()
        s_big = whole[active].tolist() if whole is not None else squared_norms(gradient(chosen, index)).tolist()
        still = []
        for i, j in enumerate(active):
            norms[positions[j]][0].append(s_small[i])
            norms[positions[j]][1].append(s_big[i])
            g2, trace, rel = _run_estimate(*norms[positions[j]], small, big, n)
            if d + 1 >= most or (d + 1 >= fewest and (not auto or rel <= float(cfg["rel_error"]))):
                out[positions[j]] = (g2, trace, d + 1)
            else:
                still.append(j)
        active = still
        if not active:
            break
    return out


def two_batch_points(gradient, subset: torch.Tensor, seeds: list[int], step: int, cfg: dict,
                     histories: list[dict] | None = None):
    """Two-batch estimates for k runs at one evaluation point.

    Args:
        gradient: (positions, index (j, b)) -> the mean gradients of the runs at those positions (of the k)
            on those examples (stacked, one per parameter).
        subset: the training evaluation subset (indices into the training split), the population drawn from.
        seeds: each run's seed; its draws come from `noise_generator(seed, step)`, without replacement.
        step: the evaluation point.
        cfg: the study's noise_scale settings (`settings`).
        histories: each run's trace so far ({dataset: values}), for `batch_big: auto` (None: none yet).

    Returns:
        (g2, trace_sigma, batch_big, draws): float64 tensors (k,) and two lists of ints.
    """
    cfg = settings(cfg)
    n, k = subset.numel(), len(seeds)
    if n <= int(cfg["batch_small"]):
        raise ValueError(f"the evaluation subset ({n}) must exceed noise_scale.batch_small ({cfg['batch_small']})")
    histories = histories or [{} for _ in seeds]
    bigs = [max(choose_batch_big(cfg, previous_b_simple(h, HISTORY_POINTS), n), int(cfg["batch_small"]) + 1)
            for h in histories]
    generators = [noise_generator(seed, step) for seed in seeds]
    results = {}
    for big in sorted(set(bigs)):
        positions = [j for j in range(k) if bigs[j] == big]
        results.update(group_points(gradient, subset, [generators[j] for j in positions], positions, big, cfg))
    g2 = torch.tensor([results[j][0] for j in range(k)], dtype=torch.float64)
    trace = torch.tensor([results[j][1] for j in range(k)], dtype=torch.float64)
    return g2, trace, bigs, [results[j][2] for j in range(k)]


def exact_is_cheap(n_params: int, n_examples: int, budget: float) -> bool:
    """Per-example gradients of one run hold parameters x examples floats at once: within the budget?"""
    return n_params * n_examples <= budget


def example_targets(task: str, y: torch.Tensor, ignore_index) -> torch.Tensor:
    """Each example's own target count (float32, at least 1), as `tasks.target_count` of y[i:i+1], at once."""
    n = y.shape[0]
    if task == "segmentation" and ignore_index is not None:
        counts = (y.reshape(n, -1) != ignore_index).sum(1)
    elif task in ("language_model", "segmentation"):
        counts = torch.full((n,), y[0].numel(), device=y.device)
    else:
        counts = torch.ones(n, device=y.device)
    return counts.clamp(min=1).to(torch.float32)


def per_example_noise(model, params, buffers, x, y, task: str, ignore_index, ddof: int = 0):
    """Exact (g2, trace_sigma), float64 (k,), of stacked runs `params` on prepared inputs x (n, ...).

    Per-example losses are means over each example's own targets (tokens, pixels); centred (about a shift
    close to the mean) before squaring."""
    totals = example_targets(task, y, ignore_index).to(x.device)
    model.base.eval()

    def one_example(p, b, xi, yi, total):
        return model.run_loss(p, b, xi.unsqueeze(0), yi.unsqueeze(0), total)

    per_example = vmap(grad(one_example), in_dims=(None, None, 0, 0, 0))
    per_run = vmap(per_example, in_dims=(0, 0, None, None, None), randomness="different")
    # one pass over the chunks, per parameter tensor, in float64: the sums of g_i and of |g_i - s|^2 about a
    # shift s (the first chunk's mean, close to G), so tr Sigma = (sum |g_i - s|^2 - n |G - s|^2) / (n - ddof)
    # stays accurate without holding the (k, n, P) per-example gradients at once
    n = x.shape[0]
    shifts, sums, squares = None, None, 0.0
    for start in range(0, n, EXACT_CHUNK):
        part = [g.detach().double().flatten(2) for g in
                per_run(tuple(params), tuple(buffers), x[start:start + EXACT_CHUNK], y[start:start + EXACT_CHUNK],
                        totals[start:start + EXACT_CHUNK])]
        if shifts is None:
            shifts, sums = [g.mean(dim=1) for g in part], [0.0] * len(part)
        sums = [total + g.sum(dim=1) for total, g in zip(sums, part)]
        squares = squares + sum(((g - shift.unsqueeze(1)) ** 2).sum(dim=(1, 2)) for g, shift in zip(part, shifts))
    means = [total / n for total in sums]
    g2 = sum((mean ** 2).sum(dim=1) for mean in means)
    offset = sum(((mean - shift) ** 2).sum(dim=1) for mean, shift in zip(means, shifts))
    return g2, (squares - n * offset) / (n - ddof)


def exact_points(model, params, buffers, x, y, task: str, ignore_index, budget: float, label: str = ""):
    """Exact (g2, trace_sigma) lists for the k stacked runs, all runs in one vmap when k x P x n fits the
    budget, run by run when only P x n does, NaN when not even that (or the model cannot be vmapped).
    (On the digits MLP pack of 15 runs, run by run measured faster than one vmap over the runs.)"""
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
        {name: one float per run of `ids`} for every name of NOISE_FIELDS and SAMPLING_FIELDS.
    """
    cfg, data = settings(parts.first["noise_scale"]), parts.data

    def gradient(positions, index):
        sub_ids, p, b = [ids[j] for j in positions], params, buffers
        if parts.model.vectorised and list(positions) != list(range(params[0].shape[0])):
            rows = torch.tensor(list(positions), device=params[0].device)
            p, b = [t.index_select(0, rows) for t in params], [t.index_select(0, rows) for t in buffers]
        return batch_gradient(parts.model, data, index, parts.states, sub_ids, p, b, parts.micro_batch,
                              parts.autocast, train=False)[1]

    g2, trace, bigs, draws = two_batch_points(gradient, parts.subset, [parts.states[r].run["seed"] for r in ids],
                                              step, cfg, [parts.states[r].points for r in ids])
    if params[0].shape[0] != len(ids):  # run by run, select() gave the whole stack
        index_ids = torch.tensor(ids, device=parts.device)
        params, buffers = [p.index_select(0, index_ids) for p in params], [b.index_select(0, index_ids)
                                                                           for b in buffers]
    exact = exact_points(parts.model, params, buffers, data.prepare(parts.eval_x, train=False), parts.eval_y,
                         data.spec.task, data.spec.ignore_index, cfg["exact_max_params_times_examples"], parts.label)
    columns = (g2.tolist(), trace.tolist(), exact[0], exact[1], bigs, draws)
    return {name: [float(value) for value in column]
            for name, column in zip(NOISE_FIELDS + SAMPLING_FIELDS, columns)}
