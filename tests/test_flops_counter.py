"""`batchscale plan`'s FLOPs against two counts made here: FlopCounterMode run by this test on the real
(CPU) model in training mode, and an independent count (forward hooks on Conv2d, Linear and LSTM for the
built-in models, the closed formula for an attention language model defined below)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from batchscale.data import DataSpec
from batchscale.models import BUILTIN_MODELS, build_model
from batchscale.jobs.plan import forward_flops, make_plan

# ----------------------------------------------------------------------------- an attention model


class TinyAttentionLM(nn.Module):
    """Embedding -> one pre-norm transformer block (nn.MultiheadAttention, ReLU MLP) -> linear decoder."""

    def __init__(self, vocab: int, dim: int, heads: int, ffn: int, call_item: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Linear(ffn, dim))
        self.decoder = nn.Linear(dim, vocab)
        self.call_item = call_item

    def forward(self, tokens):
        x = self.embed(tokens)
        if self.call_item and x.abs().max().item() > 1e6:  # data-dependent: cannot run on the meta device
            x = x / 2
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.decoder(x)


def tiny_attention(spec: DataSpec, dim: int = 16, heads: int = 4, ffn: int = 64, call_item: bool = False):
    """Builder named `test_flops_counter:tiny_attention` in a study (pytest puts tests/ on the path)."""
    return TinyAttentionLM(spec.num_classes, dim, heads, ffn, call_item)


def attention_flops_by_formula(tokens: int, vocab: int, dim: int, ffn: int) -> int:
    """2 x MACs per example (a window of `tokens`): Q, K, V and output projections 4 T d^2; scores Q K^T and
    their weighted sum of V, T^2 d each (summed over heads: d/heads per head); the MLP 2 T d f; decoder T d V."""
    macs = 4 * tokens * dim * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * ffn + tokens * dim * vocab
    return 2 * macs


# ----------------------------------------------------------------------------- reference counts


def layer_flops_by_hand(model: nn.Module, example: torch.Tensor) -> float:
    """2 x MACs of the Conv2d, Linear and LSTM layers from their shapes, via forward hooks (no FlopCounterMode)."""
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(output.numel() * module.in_channels // module.groups * kh * kw)
        elif isinstance(module, nn.Linear):
            macs.append(output.numel() * module.in_features)
        else:  # LSTM, batch_first, one direction: 4 gates x (input + hidden) per token and layer
            tokens = inputs[0].numel() // inputs[0].shape[-1]
            widths = [module.input_size] + [module.hidden_size] * (module.num_layers - 1)
            macs.append(tokens * sum(4 * module.hidden_size * (w + module.hidden_size) for w in widths))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.LSTM))]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return 2.0 * sum(macs) / example.shape[0]


def flop_counter_on_cpu(model: nn.Module, example: torch.Tensor) -> float:
    """FlopCounterMode per example on the real model, in training mode with gradients (as training runs it).
    oneDNN's fused LSTM and the CPU's fused attention have no FLOP formula (they would count 0), so this
    reference runs with oneDNN off and attention on its math path."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model.train()(example)
    finally:
        torch.backends.mkldnn.enabled = previous
    return counter.get_total_flops() / example.shape[0]


def random_batch(spec: DataSpec, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if spec.task == "language_model":
        return torch.randint(spec.num_classes, (batch, *spec.input_shape), generator=g)
    return torch.randn(batch, *spec.input_shape, generator=g)


# ----------------------------------------------------------------------------- every built-in model

DIGITS = {"name": "digits"}
CIFAR = {"name": "cifar10"}  # published sizes: plan never reads the files
CASES = {  # each built-in model on a dataset it accepts, small widths so the CPU reference stays fast
    "linear": (DIGITS, {}),
    "mlp": (DIGITS, {"hidden": [32, 16]}),
    "cnn": (DIGITS, {"channels": [8, 16]}),
    "cnn_bn": (DIGITS, {"channels": [8, 16]}),
    "resnet18": (CIFAR, {"width": 0.25}),
    "resnet34": (CIFAR, {"width": 0.25}),
    "vgg16_bn": (CIFAR, {"width": 0.25}),
    "alexnet": (CIFAR, {"width": 0.25, "hidden": 256}),
    "mobilenetv2": (CIFAR, {"width": 0.25}),
    "lstm": ({"name": "wikitext2", "options": {"bptt": 8}}, {"hidden": 24, "embedding_dim": 16}),
    "drn_d_22": ({"name": "cityscapes", "options": {"size": [32, 64]}}, {"width": 0.25}),
}
ATTENTION = ({"name": "text_corpus", "options": {"vocab_size": 50, "bptt": 32}},
             {"dim": 16, "heads": 4, "ffn": 64})


@pytest.fixture(scope="module")
def plan_studies():
    """One plan of a config with a study per built-in model and one for the attention model."""
    cases = {**{name: (data, name, options) for name, (data, options) in CASES.items()},
             "attention": (ATTENTION[0], "test_flops_counter:tiny_attention", ATTENTION[1])}
    studies = {name: {"dataset": data, "model": {"name": model, "options": options}, "eta0": 0.1, "base_batch": 4,
                      "strategies": ["blr"], "epochs": 1, "batch_sizes": [4, 8], "seeds": [0], "device": "cpu"}
               for name, (data, model, options) in cases.items()}
    return {study.name: study for study in make_plan({"studies": studies}).studies}


def test_every_builtin_model_has_a_case():
    assert set(CASES) == set(BUILTIN_MODELS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_flops_match_flop_counter_and_layer_count_on_builtin_models(plan_studies, name):
    study = plan_studies[name]
    torch.manual_seed(0)
    model = build_model({"name": name, "options": CASES[name][1]}, study.data.spec)
    example = random_batch(study.data.spec)
    planned = study.forward_flops
    assert planned > 0
    assert planned == pytest.approx(flop_counter_on_cpu(model, example), rel=0.05)
    # the built-in models do their matrix work in Conv2d, Linear and LSTM layers only
    assert planned == pytest.approx(layer_flops_by_hand(model, example), rel=0.05)


def test_plan_flops_of_an_attention_model_match_the_formula_and_flop_counter(plan_studies):
    study = plan_studies["attention"]
    spec = study.data.spec
    assert (spec.input_shape, spec.num_classes) == ((32,), 50)
    expected = attention_flops_by_formula(tokens=32, vocab=50, dim=16, ffn=64)
    assert study.forward_flops == expected == 313_344
    # a count of Linear layers alone (the old counter) misses the Q, K, V projection (a parameter, not a
    # Linear) and the two attention products: 37% here
    assert layer_flops_by_hand(tiny_attention(spec, **ATTENTION[1]), random_batch(spec)) < 0.65 * expected
    torch.manual_seed(0)
    reference = flop_counter_on_cpu(tiny_attention(spec, **ATTENTION[1]), random_batch(spec))
    assert study.forward_flops == pytest.approx(reference, rel=0.05)


def test_plan_counts_a_model_that_cannot_run_on_meta_on_the_cpu():
    # `.item()` has no data on the meta device; the CPU count must still include the attention products,
    # which the CPU's fused attention kernel would hide from FlopCounterMode
    spec = DataSpec("language_model", (32,), 50)
    with torch.device("meta"), pytest.raises(RuntimeError, match="meta"):
        tiny_attention(spec, call_item=True)(torch.zeros(1, 32, dtype=torch.int64))
    model = {"name": "test_flops_counter:tiny_attention", "options": {"call_item": True}}
    assert forward_flops(model, spec) == attention_flops_by_formula(tokens=32, vocab=50, dim=16, ffn=64)
    assert torch.backends.mkldnn.enabled  # restored after counting


def test_plan_notes_state_the_flop_convention(plan_studies):
    from batchscale.jobs.plan import format_plan, Plan

    text = " ".join(format_plan(Plan("x", list(plan_studies.values())[:1], 0, 400.0, 0.4)).split())
    assert "FLOPs = 2 x multiply-accumulates" in text and "training = 3 x forward FLOPs" in text
    assert "torch.utils.flop_counter" in text
