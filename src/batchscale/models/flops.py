"""Count the floating point operations of a model by running one example through it.

The count is PyTorch's own, `torch.utils.flop_counter.FlopCounterMode`, which sees every aten operator
the forward runs, whatever layer or functional call issues it: FLOPs = 2 x multiply-accumulates (MACs) of
the matrix products (mm, addmm, bmm, the attention products) and convolutions. Elementwise work (batch
norm, activations, softmax, pooling, residual adds, upsampling, biases, the LSTM's gate nonlinearities) is
a small fraction and is not counted; Embedding is a table lookup and counts 0. This is the usual convention
of papers that report compute (note that many tables, e.g. "ResNet-18 = 1.8 GFLOPs" on ImageNet, or 1.16 G
for the CIFAR ResNet-34, actually quote MACs; ours are twice those numbers).

Count on the meta device (build the model under `torch.device("meta")`: no memory, no arithmetic), as
`batchscale plan` does. On a real CPU some operators run as fused kernels that FlopCounterMode has no
formula for and counts as 0 (oneDNN's LSTM, the CPU flash attention, nn.MultiheadAttention's inference
fast path), so there oneDNN is switched off and attention takes PyTorch's plain math path, which both
decompose into counted matrix products.

Training costs about 3x the forward pass (forward + a backward that computes gradients with respect to
both activations and weights, each about as expensive as the forward): `training_flops_per_example`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from batchscale.data import DataSpec


def example_input(spec: DataSpec, batch: int = 1, device=None) -> torch.Tensor:
    """A zero batch shaped like the dataset's inputs (int64 tokens for language models)."""
    if spec.task == "language_model":
        return torch.zeros(batch, *spec.input_shape, dtype=torch.int64, device=device)
    return torch.zeros(batch, *spec.input_shape, device=device)


@contextlib.contextmanager
def _countable_kernels(device: torch.device):
    """On a real device, the unfused kernels whose matrix products FlopCounterMode counts (see the docstring)."""
    if device.type == "meta":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # the property, not torch.backends.mkldnn.flags(): that also resets TF32 and warns about it on the CPU
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mkldnn.enabled = previous


def forward_flops_per_example(model: nn.Module, spec: DataSpec) -> float:
    """Forward FLOPs (2 x MACs, FlopCounterMode) of one example of `spec.input_shape`, on the model's device."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()  # a batch of one in train mode would update batch-norm statistics (or fail at 1x1)
    counter = FlopCounterMode(display=False)
    try:
        # gradients stay enabled: under no_grad nn.MultiheadAttention takes a fused inference path that
        # training never runs and FlopCounterMode cannot count
        with _countable_kernels(device), counter, torch.enable_grad():
            model(example_input(spec, 1, device))
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())


def training_flops_per_example(model: nn.Module, spec: DataSpec) -> float:
    """Forward + backward FLOPs per example, the usual 3x forward approximation (backward ~ 2x forward)."""
    return 3.0 * forward_flops_per_example(model, spec)
