"""Count the floating point operations of a model by running one example through it.

FLOPs = 2 x multiply-accumulates (MACs) of the layers that dominate the cost: Conv2d, Linear and LSTM.
Everything else (batch norm, activations, pooling, residual adds, upsampling, biases, the LSTM's gate
nonlinearities) is a small fraction and is not counted; Embedding is a table lookup and counts 0. This is
the usual convention of papers that report compute (note that many tables, e.g. "ResNet-18 = 1.8 GFLOPs"
on ImageNet, or 1.16 G for the CIFAR ResNet-34, actually quote MACs; ours are twice those numbers).

Measuring with forward hooks, rather than reading layer shapes, gets the real output sizes (strides,
dilation, padding, adaptive pooling, sequence length) without any per-architecture code.

Training costs about 3x the forward pass (forward + a backward that computes gradients with respect to
both activations and weights, each about as expensive as the forward): `training_flops_per_example`.
"""

from __future__ import annotations

import torch
from torch import nn

from batchscale.data import DataSpec


def _conv_macs(module: nn.Conv2d, inputs, output) -> int:
    # every output element is a dot product over (in_channels / groups) x kernel_h x kernel_w inputs
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


def _linear_macs(module: nn.Linear, inputs, output) -> int:
    # output may be (B, out) or (B, T, out): each element costs in_features MACs
    return output.numel() * module.in_features


def _lstm_macs(module: nn.LSTM, inputs, output) -> int:
    x = inputs[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = int(x.data.shape[0])  # total (batch x time) steps
    else:
        steps = x.numel() // x.shape[-1]  # batch x time
    directions = 2 if module.bidirectional else 1
    hidden = module.proj_size or module.hidden_size  # what is fed back each step
    macs = 0
    for layer in range(module.num_layers):
        # four gates, each a matrix-vector product with the layer input and with the previous hidden state
        inp = module.input_size if layer == 0 else hidden * directions
        macs += 4 * module.hidden_size * (inp + hidden)
        if module.proj_size:
            macs += module.hidden_size * module.proj_size
    return steps * directions * macs


_COUNTERS = {nn.Conv2d: _conv_macs, nn.Linear: _linear_macs, nn.LSTM: _lstm_macs, nn.Embedding: lambda *a: 0}


def _counter(module: nn.Module):
    # isinstance, not type(): subclasses (e.g. attention's NonDynamicallyQuantizableLinear) count too
    return next((count for cls, count in _COUNTERS.items() if isinstance(module, cls)), None)


def example_input(spec: DataSpec, batch: int = 1, device=None) -> torch.Tensor:
    """A zero batch shaped like the dataset's inputs (int64 tokens for language models)."""
    if spec.task == "language_model":
        return torch.zeros(batch, *spec.input_shape, dtype=torch.int64, device=device)
    return torch.zeros(batch, *spec.input_shape, device=device)


@torch.no_grad()
def forward_flops_per_example(model: nn.Module, spec: DataSpec) -> float:
    """Forward FLOPs (2 x MACs of Conv2d, Linear and LSTM layers) for one example of `spec.input_shape`."""
    macs = []

    def hook(module, inputs, output):
        if isinstance(output, tuple):  # LSTM returns (output, (h, c))
            output = output[0]
        macs.append(_counter(module)(module, inputs, output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if _counter(m) is not None]
    was_training = model.training
    model.eval()  # a batch of one in train mode would update batch-norm statistics (or fail at 1x1)
    try:
        parameter = next(model.parameters(), None)
        model(example_input(spec, 1, parameter.device if parameter is not None else None))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return 2.0 * float(sum(macs))


def training_flops_per_example(model: nn.Module, spec: DataSpec) -> float:
    """Forward + backward FLOPs per example, the usual 3x forward approximation (backward ~ 2x forward)."""
    return 3.0 * forward_flops_per_example(model, spec)
