"""Evaluation of a pack's runs, and the recorder that appends it to their traces.

What a trace records at an evaluation point is the list ENTRIES below: each entry measures its datasets for
the runs due, vectorised over those runs, and returns them by name; a new traced metric is one entry (and,
when it is optional, a line in store.traces.OPTIONAL_METRICS). Every evaluation is in eval mode: train loss and
accuracy on the study's fixed training subset, test loss and accuracy on the test split.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from batchscale.engine import noise, tasks
from batchscale.engine.packed_model import PackedModel
from batchscale.engine.parts import PackParts
from batchscale.engine.runtime import DeviceData
from batchscale.engine.step import batch_gradient
from batchscale.errors import MicroBatchTooLarge

# end-of-run scalars of the linear approximation error: at the end of warm-up, and at the final weights (the
# last finite ones for a run that diverged)
APPROX_SCALARS = ("final_linear_approx_error", "final_linear_approx_error_rel",
                  "linear_approx_error_warmup_end", "linear_approx_error_warmup_end_rel")


def evaluate(model: PackedModel, data: DeviceData, params, buffers, ids, x, y, batch_size: int, autocast) -> list[dict]:
    """Each run's loss and accuracy over a split, in eval mode.

    Args:
        model: the pack's stacked model.
        data: the pack's data (normalisation).
        params, buffers: the runs' weights (`PackedModel.select(ids)`, or any stack over `ids`).
        ids: the runs evaluated (positions in the pack).
        x, y: the split's examples and targets, shared by every run.
        batch_size: examples per forward.
        autocast: the pack's mixed-precision context.

    Returns:
        One dict per run of `ids`: mean loss and accuracy over the split's targets ("loss", "acc"), and the
        mean IoU ("miou") for segmentation.
    """
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
    results = [{"loss": total / count, "acc": hits / count} for total, hits in zip(loss.tolist(), correct.tolist())]
    if spec.task == "segmentation":
        for result, matrix in zip(results, confusion):
            result["miou"] = tasks.mean_iou(matrix)
    return results


def stacked_over(tensors: list[torch.Tensor], ids: list[int]) -> list[torch.Tensor]:
    """Stacked tensors with one row per run of `ids`: the whole pack's stack (which `PackedModel.select` gives
    when the pack trains run by run) cut down to those runs; a stack over `ids` as it is."""
    if not tensors or tensors[0].shape[0] == len(ids):
        return tensors
    index = torch.tensor(ids, device=tensors[0].device)
    return [t.index_select(0, index) for t in tensors]


def linear_approximation_errors(model, data, params, buffers, ids, states, loss_star, eval_x, eval_y, autocast):
    """The linear approximation error of runs `ids` at their given weights w* (paper Sec. 4.2, Fig. 2 right).

    |L(w) - L(w*) - <g_m, w - w*>| at w = w* - eta0 (m/m0) g_m, with L the eval-mode loss on the fixed
    training subset and g_m the eval-mode gradient of a fresh batch of m examples drawn from the run's own
    generator (`RunState.approx_generator`).

    Args:
        model, data: the pack's model and data.
        params, buffers: the runs' weights w*.
        ids: the runs (positions in the pack).
        states: every run's state (its config and approximation stream).
        loss_star: L(w*) of each run of `ids`.
        eval_x, eval_y: the training evaluation subset.
        autocast: the pack's mixed-precision context.

    Returns:
        One (error, error / |L(w) - L(w*)|) pair per run of `ids` (the relative error NaN where L did not move).
    """
    run = states[ids[0]].run
    n, m = data.x_train.shape[0], min(run["batch_size"], data.x_train.shape[0])
    index = torch.stack([torch.randperm(n, generator=states[r].approx_generator)[:m] for r in ids])
    index = index.to(data.x_train.device)
    _, grads = batch_gradient(model, data, index, states, ids, params, buffers, run.get("micro_batch"), autocast,
                              train=False)
    params, buffers = stacked_over(params, ids), stacked_over(buffers, ids)  # like grads, one row per run of ids
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


def linear_approximation_at(parts: PackParts, ids: list[int], params) -> list[tuple[float, float]]:
    """The linear approximation error (absolute, relative) of runs `ids` at the weights `params` (a stack over
    `ids`, or `PackedModel.select(ids)`'s), measured from scratch; NaN for a run whose weights are not all finite."""
    model = parts.model
    buffers = model.select(ids)[1]
    if params[0].shape[0] == len(ids):  # run by run, select() gives the whole stack of buffers
        buffers = stacked_over(buffers, ids)
    finite = [all(bool(torch.isfinite(p[j]).all()) for p in stacked_over(params, ids)) for j in range(len(ids))]
    loss_star = [t["loss"] for t in evaluate(model, parts.data, params, buffers, ids, parts.eval_x, parts.eval_y,
                                             parts.evaluation["batch_size"], parts.autocast)]
    errors = linear_approximation_errors(model, parts.data, params, buffers, ids, parts.states, loss_star,
                                         parts.eval_x, parts.eval_y, parts.autocast)
    return [e if ok else (float("nan"), float("nan")) for e, ok in zip(errors, finite)]


@dataclass
class Point:
    """One evaluation point of runs `ids`: their weights, and what the entries before have measured."""

    ids: list[int]
    step: int
    params: list[torch.Tensor]
    buffers: list[torch.Tensor]
    columns: dict[str, list] = field(default_factory=dict)  # trace dataset -> one value per run of ids
    splits: dict[str, list[dict]] = field(default_factory=dict)  # "train"/"test" -> evaluate()'s results


class Entry:
    """What one recorder entry adds to the traces at an evaluation point."""

    def applies(self, parts: PackParts) -> bool:
        """Whether the pack records this entry at all (its task, its study's settings)."""
        return True

    def measure(self, parts: PackParts, point: Point) -> dict[str, list]:
        """{dataset name: one value per run of point.ids}."""
        raise NotImplementedError


class Position(Entry):
    """Where each run is: step, epoch, examples seen and the rate of the update that led here."""

    def measure(self, parts, point):
        states = [parts.states[r] for r in point.ids]
        return {"step": [point.step] * len(states),
                "epoch": [point.step / state.steps_per_epoch for state in states],
                "examples_seen": [point.step * state.run["batch_size"] for state in states],
                "lr": [state.lr(max(point.step - 1, 0)) for state in states]}


class SplitEvaluation(Entry):
    """Loss and accuracy on the training evaluation subset ("train") or the test split ("test")."""

    def __init__(self, split: str):
        self.split = split

    def measure(self, parts, point):
        x, y = (parts.eval_x, parts.eval_y) if self.split == "train" else (parts.data.x_test, parts.data.y_test)
        results = evaluate(parts.model, parts.data, point.params, point.buffers, point.ids, x, y,
                           parts.evaluation["batch_size"], parts.autocast)
        point.splits[self.split] = results
        return {f"{self.split}_loss": [r["loss"] for r in results], f"{self.split}_acc": [r["acc"] for r in results]}


class Perplexity(Entry):
    """exp(test loss) of a language model (capped where exp would overflow)."""

    def applies(self, parts):
        return parts.data.spec.task == "language_model"

    def measure(self, parts, point):
        return {"test_perplexity": [math.exp(min(loss, 700.0)) for loss in point.columns["test_loss"]]}


class MeanIoU(Entry):
    """Mean intersection over union of a segmentation model on the test split."""

    def applies(self, parts):
        return parts.data.spec.task == "segmentation"

    def measure(self, parts, point):
        return {"test_miou": [result["miou"] for result in point.splits["test"]]}


class LinearApproximation(Entry):
    """The linear approximation error at the current weights (study key evaluation.linear_approx)."""

    def applies(self, parts):
        return parts.evaluation.get("linear_approx", True)

    def measure(self, parts, point):
        errors = linear_approximation_errors(parts.model, parts.data, point.params, point.buffers, point.ids,
                                             parts.states, point.columns["train_loss"], parts.eval_x, parts.eval_y,
                                             parts.autocast)
        return {"linear_approx_error": [error for error, _ in errors],
                "linear_approx_error_rel": [relative for _, relative in errors]}


class NoiseScale(Entry):
    """The gradient noise scale's two-batch and exact estimates (study key noise_scale)."""

    def applies(self, parts):
        return bool((parts.first.get("noise_scale") or {}).get("enabled"))

    def measure(self, parts, point):
        return noise.noise_columns(parts, point.ids, point.params, point.buffers, point.step)


# In order: an entry may read the columns of those before it (the train loss is L(w*) for the linear
# approximation); optional datasets appear in a trace in this order.
ENTRIES = (Position(), SplitEvaluation("train"), SplitEvaluation("test"), Perplexity(), MeanIoU(),
           LinearApproximation(), NoiseScale())


class Recorder:
    """Evaluates a pack's runs at an evaluation point and appends every entry's datasets to their traces."""

    def __init__(self, parts: PackParts, entries=None):
        self.parts = parts
        self.entries = [entry for entry in (ENTRIES if entries is None else entries) if entry.applies(parts)]
        self.seconds = 0.0  # spent evaluating, over the whole run (a resumed run starts from its checkpoint's)

    def record(self, ids: list[int], step: int, started: float) -> list[float]:
        """Evaluate runs `ids` at `step` and append to their traces.

        Args:
            ids: the runs due (positions in the pack).
            step: the step they are at.
            started: time.perf_counter() at the start of training, for the wall_time dataset.

        Returns:
            Each run's train loss (on the training evaluation subset).

        Raises:
            MicroBatchTooLarge: an evaluation chunk does not fit in device memory.
        """
        began = time.perf_counter()
        params, buffers = self.parts.model.select(ids)
        point = Point(ids, step, params, buffers)
        try:
            for entry in self.entries:
                point.columns.update(entry.measure(self.parts, point))
        except torch.OutOfMemoryError:
            raise MicroBatchTooLarge(
                f"out of device memory evaluating {self.parts.evaluation['batch_size']} examples at once; "
                f"lower `evaluation.batch_size` in study {self.parts.first['study']!r}") from None
        self.seconds += time.perf_counter() - began
        point.columns["wall_time"] = [time.perf_counter() - started] * len(ids)
        for j, r in enumerate(ids):
            points = self.parts.states[r].points
            for name, values in point.columns.items():
                points.setdefault(name, []).append(values[j])
        return point.columns["train_loss"]
