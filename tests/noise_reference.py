"""Reference implementations of the gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al.
2018, appendix A), written independently of the engine, for the tests to check the engine against.

The model is given as a functional loss, ``loss_fn(params, x, y) -> mean loss over the examples`` with
``params`` a dict of tensors (the torch.func style; `functional_loss` builds one from an nn.Module).

What is estimated, and against which population
------------------------------------------------
The population is the fixed training evaluation subset of n examples (the same examples for every run of a
study), taken as an empirical distribution: G = (1/n) sum_i g_i is its mean gradient and

    tr Sigma = (1/n) sum_i |g_i - G|^2        (the n convention: Sigma is the covariance of that
                                               empirical distribution, not a sample covariance)

with g_i the gradient of example i's loss. Both batches of the two-batch estimator are drawn from the
subset *with replacement*, so a batch of B examples has E|G_B|^2 = |G|^2 + tr Sigma / B exactly, and the
two-batch estimates below are unbiased for exactly these |G|^2 and tr Sigma (n convention). The exact
computation (`exact_noise`) returns the same two quantities from per-example gradients, so the two can be
compared directly. (Drawing without replacement would make the |G|^2 estimate biased by -tr Sigma/(n-1);
drawing with replacement avoids that.) `exact_noise(..., ddof=1)` gives the n-1 convention instead, an
unbiased estimate of the covariance of the distribution the subset was drawn from.

The small batch is the first B_small examples of the big batch (nested draws): each is still an i.i.d.
with-replacement sample, so both expectations hold, and the shared examples correlate |G_small|^2 with
|G_big|^2, which lowers the variance of their difference (the tr Sigma numerator).

Units: |G|^2 in (loss / parameter)^2; tr Sigma in the same units times examples; B_simple in examples.

Windowed B_simple (`windowed_noise_scale`): the two-batch estimates are noisy (|G|^2 can come out
negative late in training, where tr Sigma / B_small dominates), so B_simple at evaluation point i is the
ratio of the window means, mean(tr Sigma) / mean(|G|^2) over the trailing `window` points i-window+1..i,
never a mean of per-point ratios, whose denominators may be near zero or negative.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import torch
from torch.func import functional_call, grad, vmap

from batchscale.analysis.noise import noise_scale, windowed_noise_scale  # noqa: F401 (the tests use them here)
from batchscale.engine.noise import two_batch_estimates

LossFn = Callable[[Mapping[str, torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


class TwoBatchNoise(NamedTuple):
    """One two-batch measurement: squared norms of the two mean gradients and the derived estimates."""

    g2_small: float
    g2_big: float
    g2: float            # estimate of |G|^2
    trace_sigma: float   # estimate of tr Sigma (n convention over the evaluation subset)


class ExactNoise(NamedTuple):
    """|G|^2 and tr Sigma from every per-example gradient of the subset."""

    g2: float
    trace_sigma: float
    n_examples: int
    n_params: int


# --------------------------------------------------------------------------------------------
# The estimator


# --------------------------------------------------------------------------------------------
# Gradients


def functional_loss(model: torch.nn.Module, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """(loss_fn, params) for an nn.Module: loss_fn(params, x, y) = loss(model(x), y) with `params` swapped in.

    Buffers (BatchNorm statistics) are passed unchanged, so the model must already be in the mode it is
    measured in (the engine measures in eval mode, like the training loss, so that the gradient is a
    function of the weights alone). `loss` must return the mean over the examples.
    """
    buffers = dict(model.named_buffers())
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}

    def loss_fn(p, x, y):
        return loss(functional_call(model, ({**buffers, **p},), (x,)), y)

    return loss_fn, params


def squared_norm(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """sum of squares over every tensor of a dict (float64, on the tensors' device)."""
    return sum((t.double() ** 2).sum() for t in tensors.values())


def mean_gradient(loss_fn: LossFn, params, x: torch.Tensor, y: torch.Tensor, micro_batch: int | None = None):
    """Gradient of the mean loss over (x, y), accumulated over micro-batches with exact weighting."""
    n = x.shape[0]
    chunk = micro_batch if micro_batch and micro_batch < n else n
    total = None
    for start in range(0, n, chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        part = grad(loss_fn)(params, xs, ys)
        weight = xs.shape[0] / n  # loss_fn is a mean: weight each chunk by its share of the batch
        total = {k: v * weight for k, v in part.items()} if total is None else \
            {k: total[k] + v * weight for k, v in part.items()}
    return total


def draw_two_batches(n: int, batch_small: int, batch_big: int, generator: torch.Generator):
    """Indices into the subset: a big batch drawn with replacement, and the small one nested as its head."""
    big = torch.randint(n, (batch_big,), generator=generator)
    return big[:batch_small], big


def two_batch_noise(loss_fn: LossFn, params, x: torch.Tensor, y: torch.Tensor, batch_small: int, batch_big: int,
                    generator: torch.Generator, micro_batch: int | None = None, draws: int = 1) -> TwoBatchNoise:
    """Two-batch measurement on the evaluation subset (x, y), batches drawn with `generator` (CPU).

    With draws > 1 the squared norms are averaged over independent draws before the estimates are formed;
    the estimates are linear in the squared norms, so this equals the mean of the per-draw estimates and
    stays unbiased, with variance divided by `draws`.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    g2_small = g2_big = 0.0
    for _ in range(draws):
        small, big = draw_two_batches(x.shape[0], batch_small, batch_big, generator)
        small, big = small.to(x.device), big.to(x.device)
        g2_small += float(squared_norm(mean_gradient(loss_fn, params, x[small], y[small], micro_batch))) / draws
        g2_big += float(squared_norm(mean_gradient(loss_fn, params, x[big], y[big], micro_batch))) / draws
    g2, trace_sigma = two_batch_estimates(g2_small, g2_big, batch_small, batch_big)
    return TwoBatchNoise(g2_small, g2_big, g2, trace_sigma)


def two_batch_noise_stacked(loss_fn: LossFn, stacked_params, x: torch.Tensor, y: torch.Tensor, batch_small: int,
                            batch_big: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Two-batch measurement for R packed runs at once (params stacked along a leading run dimension).

    Every run sees the same two batches (common random numbers: differences between runs are then not
    differences between draws). Returns float64 tensors of shape (R,) under the TwoBatchNoise field names.
    """
    small, big = draw_two_batches(x.shape[0], batch_small, batch_big, generator)
    small, big = small.to(x.device), big.to(x.device)
    per_run_grad = vmap(grad(loss_fn), in_dims=(0, None, None))

    def per_run_norms(xb, yb):
        grads = per_run_grad(stacked_params, xb, yb)
        return sum((g.double() ** 2).flatten(1).sum(1) for g in grads.values())

    g2_small, g2_big = per_run_norms(x[small], y[small]), per_run_norms(x[big], y[big])
    g2, trace_sigma = two_batch_estimates(g2_small, g2_big, batch_small, batch_big)
    return {"g2_small": g2_small, "g2_big": g2_big, "g2": g2, "trace_sigma": trace_sigma}


# --------------------------------------------------------------------------------------------
# Exact per-example gradients


def count_params(params: Mapping[str, torch.Tensor]) -> int:
    return sum(p.numel() for p in params.values())


def exact_is_cheap(params, n_examples: int, max_params_times_examples: float) -> bool:
    """Whether per-example gradients fit the budget: parameters x examples (the floats held at once)."""
    return count_params(params) * n_examples <= max_params_times_examples


def per_example_gradients(loss_fn: LossFn, params, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Every example's gradient, flattened: an (n, P) tensor (torch.func vmap over grad of a 1-example loss)."""
    def one_example_loss(p, xi, yi):
        return loss_fn(p, xi.unsqueeze(0), yi.unsqueeze(0))

    per_example = vmap(grad(one_example_loss), in_dims=(None, 0, 0))
    rows = []
    for start in range(0, x.shape[0], chunk):
        grads = per_example(params, x[start:start + chunk], y[start:start + chunk])
        rows.append(torch.cat([g.flatten(1) for g in grads.values()], dim=1))
    return torch.cat(rows, dim=0)


def exact_noise(loss_fn: LossFn, params, x: torch.Tensor, y: torch.Tensor, ddof: int = 0,
                chunk: int = 256) -> ExactNoise:
    """|G|^2 and tr Sigma over the subset from every per-example gradient.

    tr Sigma = sum_i |g_i - G|^2 / (n - ddof): ddof=0 is the n convention the two-batch estimator targets
    (see the module docstring); ddof=1 the sample covariance. Centred before squaring (float64), so there
    is no cancellation when |G|^2 dwarfs tr Sigma early in training.
    """
    g = per_example_gradients(loss_fn, params, x, y, chunk).double()
    n = g.shape[0]
    if n - ddof <= 0:
        raise ValueError(f"{n} examples are too few for ddof={ddof}")
    mean = g.mean(dim=0)
    trace_sigma = float(((g - mean) ** 2).sum() / (n - ddof))
    return ExactNoise(float((mean ** 2).sum()), trace_sigma, n, g.shape[1])


def exact_noise_stacked(loss_fn: LossFn, stacked_params, x: torch.Tensor, y: torch.Tensor,
                        ddof: int = 0) -> dict[str, torch.Tensor]:
    """`exact_noise` for R packed runs: a vmap over the run dimension of the per-example vmap.

    Holds R x n x P floats at once; the caller applies the budget to R x P x n. Returns float64 tensors of
    shape (R,) named g2 and trace_sigma.
    """
    n = x.shape[0]
    if n - ddof <= 0:
        raise ValueError(f"{n} examples are too few for ddof={ddof}")

    def one_example_loss(p, xi, yi):
        return loss_fn(p, xi.unsqueeze(0), yi.unsqueeze(0))

    per_example = vmap(grad(one_example_loss), in_dims=(None, 0, 0))
    per_run = vmap(per_example, in_dims=(0, None, None))
    grads = per_run(stacked_params, x, y)  # each (R, n, *shape)
    g = torch.cat([v.flatten(2) for v in grads.values()], dim=2).double()
    mean = g.mean(dim=1, keepdim=True)
    return {"g2": (mean ** 2).sum(dim=(1, 2)), "trace_sigma": ((g - mean) ** 2).sum(dim=(1, 2)) / (n - ddof)}


# --------------------------------------------------------------------------------------------
# Window
