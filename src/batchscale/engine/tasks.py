"""Per-task loss and metrics, as sums so micro-batches and evaluation chunks combine exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_count(task: str, y: torch.Tensor, ignore_index: int | None) -> int:
    """How many targets a batch has: examples, tokens, or labelled pixels."""
    if task == "segmentation" and ignore_index is not None:
        return int((y != ignore_index).sum())
    if task in ("language_model", "segmentation"):
        return y.numel()
    return y.shape[0]


def cross_entropy_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the last (class) dimension. Written out rather than F.cross_entropy: under
    torch.func.vmap, nll_loss runs a Python decomposition, and a packed MLP step is then about 25% slower
    (the gradients come out bit for bit the same: benchmarks/bench_cross_entropy.py)."""
    return -logits.log_softmax(dim=-1).gather(-1, y.unsqueeze(-1)).sum()


def loss_sum(task: str, output: torch.Tensor, y: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """Sum of per-target losses (cross-entropy; half squared error for regression)."""
    if output.dtype in (torch.float16, torch.bfloat16):
        output = output.float()  # losses in fp32 even under bf16 autocast
    if task == "classification":
        return cross_entropy_sum(output, y)
    if task == "regression":
        return 0.5 * F.mse_loss(output, y, reduction="sum")
    if task == "language_model":
        return cross_entropy_sum(output, y)
    if task == "segmentation":
        return F.cross_entropy(output, y, reduction="sum", ignore_index=-100 if ignore_index is None else ignore_index)
    raise ValueError(f"unknown task {task!r}")


def correct_count(task: str, output: torch.Tensor, y: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """Correct predictions (examples, tokens, pixels); NaN for regression."""
    if task == "regression":
        return torch.tensor(float("nan"))
    prediction = output.argmax(dim=1 if task in ("classification", "segmentation") else -1)
    hit = prediction == y
    if task == "segmentation" and ignore_index is not None:
        hit = hit & (y != ignore_index)
    return hit.sum()


def confusion_matrix(output: torch.Tensor, y: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """Pixel confusion matrix (true x predicted) for mean IoU."""
    prediction = output.argmax(dim=1).flatten()
    truth = y.flatten()
    keep = truth != ignore_index if ignore_index is not None else torch.ones_like(truth, dtype=torch.bool)
    index = truth[keep] * num_classes + prediction[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean over classes present (in truth or prediction) of TP / (TP + FP + FN)."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    return float((true_positive[present] / union[present]).mean()) if present.any() else float("nan")
