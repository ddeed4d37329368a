"""A pack's pieces, built once: its data on the device, the evaluation subset, the stacked model (vectorised
or run by run), the optimizer and each run's state. A pack (`train_pack`) and a branch (`engine.branch`)
build them here, so a branch trains exactly as the pack of its base run does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from batchscale.data import Splits, load_dataset
from batchscale.engine.optim import build_optimizer
from batchscale.engine.packed_model import PackedModel, build_packed_model
from batchscale.engine.runtime import DeviceData, autocast_factory
from batchscale.engine.state import RunState
from batchscale.engine.step import StepParts, batch_inputs, micro_batch_too_large

# vmap costs about 0.4 ms per step on the CPU whatever the pack; a plain step of a digits MLP about 0.12 ms:
# measured break-even near 3 runs (benchmarks/bench_packing.py measures 16)
MIN_RUNS_TO_VECTORISE_ON_CPU = 4
# what every run of a pack must share (everything else may differ: seed, strategy, rates, optimizer values)
SHARED_KEYS = ("study", "batch_size", "dataset", "data_root", "model", "micro_batch", "evaluation", "device",
               "precision", "channels_last", "noise_scale")
# the training evaluation subset is the same examples for every run of a study: seeded by its split seed
SUBSET_SEED_OFFSET = 104729


@dataclass(kw_only=True)
class PackParts(StepParts):
    """A pack's step parts plus what its evaluations read: the runs, the device, the fixed training
    evaluation subset (indices into the training split, and its examples), a label for messages and
    the dataset's description of its splits."""

    runs: list[dict]
    device: torch.device
    subset: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    label: str
    split_info: dict  # what the dataset says about its splits (Splits.info), recorded in every trace

    @property
    def first(self) -> dict:
        """The first run's config: every key of SHARED_KEYS is the same in every run."""
        return self.runs[0]

    @property
    def evaluation(self) -> dict:
        """The study's evaluation settings (points per decade, subset size, batch size, linear_approx)."""
        return self.first["evaluation"]

    @property
    def num_train(self) -> int:
        """How many training examples the pack draws its batches from."""
        return self.data.x_train.shape[0]


def check_pack(runs: list[dict]) -> None:
    """Raise ValueError unless the runs share every key a pack trains with one step (SHARED_KEYS, grad_clip)."""
    for key in SHARED_KEYS:
        values = {repr(run.get(key)) for run in runs}
        if len(values) > 1:
            raise ValueError(f"the runs of a pack must share `{key}`; got {len(values)} different values")
    if len({run["optimizer"].get("grad_clip") for run in runs}) > 1:
        raise ValueError("the runs of a pack must share `optimizer.grad_clip`")


def build_pack(runs: list[dict], device: torch.device, splits: Splits | None = None,
               vectorise: bool | None = None) -> PackParts:
    """Every piece a pack of `runs` trains and evaluates with.

    Args:
        runs: resolved run configs sharing SHARED_KEYS.
        device: where the data, model and optimizer live.
        splits: the dataset, when the caller has it already (otherwise read from the first run's config).
        vectorise: None decides (`choose_vectorising`), False trains run by run, True insists on vmap.

    Returns:
        The pack's parts, each model at its run's initial weights (those of the run trained alone).
    """
    first = runs[0]
    m = first["batch_size"]
    splits = splits if splits is not None else load_dataset(first["dataset"], first["data_root"], first["download"])
    data = DeviceData(splits, device, first["dataset"].get("augment", False), first["seed"])
    n = data.x_train.shape[0]
    if m > n:
        raise ValueError(f"batch size {m} is larger than the {n} training examples of study {first['study']!r}")
    states = [RunState.create(run, n, device) for run in runs]
    subset_generator = torch.Generator().manual_seed(first["dataset"].get("split_seed", 0) + SUBSET_SEED_OFFSET)
    subset = torch.randperm(n, generator=subset_generator)[: first["evaluation"]["train_subset"]].to(device)
    model = build_packed_model(runs, data.spec, device,
                               channels_last=bool(first.get("channels_last")) and device.type == "cuda"
                               and len(data.spec.input_shape) == 3)
    dtype = model.params[0].dtype
    if dtype != torch.float32 and data.x_train.is_floating_point():  # a float64 model (tests): float64 inputs
        data.x_train, data.x_test = data.x_train.to(dtype), data.x_test.to(dtype)
    parts = PackParts(model=model, data=data, optimizer=build_optimizer(runs, model.params), states=states,
                      autocast=autocast_factory(device, first.get("precision", "fp32")),
                      micro_batch=first.get("micro_batch"), grad_clip=first["optimizer"].get("grad_clip"),
                      runs=runs, device=device, subset=subset, eval_x=data.x_train[subset],
                      eval_y=data.y_train[subset], label=f"{first['study']} bs{m} pack of {len(runs)}",
                      split_info=splits.info)
    model.vectorised = choose_vectorising(parts, vectorise)
    return parts


def choose_vectorising(parts: PackParts, vectorise: bool | None) -> bool:
    """Whether the pack trains by one vmapped step.

    Args:
        parts: the pack's parts (its model still untrained).
        vectorise: None tries vmap on a first batch and compares it with the run-by-run gradient; True tries
            and compares all the same, but fails where vmap fails; False never vectorises.

    Returns:
        True for the vmapped step. A pack of one, or on the CPU one of fewer than
        MIN_RUNS_TO_VECTORISE_ON_CPU runs, trains run by run, where vmap's fixed cost per step is not repaid.
    """
    model, data, states = parts.model, parts.data, parts.states
    runs = len(states)
    if vectorise is False or (vectorise is None and
                              runs < (MIN_RUNS_TO_VECTORISE_ON_CPU if data.x_train.device.type == "cpu" else 2)):
        return False
    m = states[0].run["batch_size"]
    trial = torch.arange(min(m, 16), device=data.x_train.device).expand(runs, -1)
    x, y = batch_inputs(data, trial, states, list(range(runs)), train=False)
    totals = torch.full((runs,), float(trial.shape[1]), device=data.x_train.device)
    try:
        reason = model.check_vectorising(x, y, totals, parts.autocast)
    except torch.OutOfMemoryError:
        raise micro_batch_too_large(states, parts.micro_batch) from None
    return _vectorising_said(model, parts.label, reason, vectorise)


def _vectorising_said(model: PackedModel, label: str, reason: str | None, vectorise: bool | None) -> bool:
    """Say on stderr how the pack trains and evaluates; raise where vmap was insisted on but fails."""
    if reason is not None and vectorise:
        raise ValueError(f"{label}: vectorising was asked for but fails: {reason}")
    if reason is not None:
        print(f"{label}: cannot vectorise this model ({reason}); training its runs one after another",
              file=sys.stderr)
    elif not model.vectorised_eval:
        print(f"{label}: training vectorised; evaluating its runs one after another (vmap cannot evaluate "
              f"this model without gradients)", file=sys.stderr)
    return reason is None
