"""The branching DAG end to end on a tiny study: base run -> checkpoints -> branches -> one bracket per
checkpoint in local_critical_batch.csv, and its figure; and the base run over the engine's pieces is the
engine's own run."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
import torch

from batchscale.engine import branch as branching_engine
from batchscale.analysis import branching as br
from batchscale.engine.pack import train_pack
from conftest import snakemake, tiny_config, tiny_run, write_config

BRANCHING = {"enabled": True, "strategy": "blr", "batch_size": 16, "seed": 0, "checkpoints": 2, "k": [1, 2, 4],
             "delta_examples": 256, "evaluations": 3, "tolerance": 0.05}


def test_the_dag_writes_a_bracket_per_checkpoint(workflow_dir):
    config = tiny_config(batch_sizes=[16, 32], base_batch=16, epochs=1, branching=BRANCHING)
    write_config(workflow_dir / "branching.yaml", config)
    snakemake(workflow_dir, "--cores", "1", "results/tiny/local_critical_batch.csv",
              "results/tiny/figures/local_critical_batch.png", configfile="branching.yaml")
    table = pd.read_csv(workflow_dir / "results" / "tiny" / "local_critical_batch.csv")
    steps = br.checkpoint_steps(1437 // 16, 2)  # one epoch of the 1437 digits at B = 16: steps 1 and 89
    assert table["checkpoint_examples"].tolist() == [16 * s for s in steps] == [16, 1424]
    assert set(table["bracket"]) <= {"interval", "at_least", "below"}  # a bracket at every checkpoint
    assert (table["k_tried"] == "1,2,4").all() and (table["base_batch"] == 16).all()
    assert np.all(np.isfinite(table["reference_loss"]))
    assert (workflow_dir / "results" / "tiny" / "figures" / "local_critical_batch.svg").exists()
    dry = snakemake(workflow_dir, "--cores", "1", "-n", "results/tiny/local_critical_batch.csv",
                    configfile="branching.yaml")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_the_base_run_is_the_engines_run_and_a_branch_starts_from_its_checkpoint():
    torch.set_num_threads(1)
    run = tiny_run(model={"name": "mlp"}, epochs=1, batch_size=32)
    base = branching_engine.train_base(run, 3)
    alone = train_pack([run], progress=False)[0]
    last = base["checkpoints"][-1]
    assert last["step"] == alone.steps_total
    assert last["train_loss"] == alone.points["train_loss"][-1]  # same weights, bit for bit
    # k = 1 from the last checkpoint, with the engine's own rate, is that run continued: its loss moves on
    branch = branching_engine.train_branch(run, last, 1, 256, "linear", seed=5, evaluations=2)
    assert branch["steps"] == 8 and branch["eval_steps"] == [4, 8] and len(branch["losses"]) == 2
    assert np.all(np.isfinite(branch["losses"])) and branch["losses"][-1] != last["train_loss"]


def test_an_adamw_base_run_has_the_weights_of_the_packs_run_bit_for_bit(monkeypatch):
    """The base run steps through the pack's own step: AdamW reads the same float64 rates, so the final
    checkpoint holds the weights train_pack ends with, bit for bit."""
    import batchscale.engine.parts as parts
    from batchscale.spec.runs import RunKey, run_config
    from batchscale.validate import load_config

    torch.set_num_threads(1)
    adamw = {"name": "adamw", "betas": [0.9, 0.999], "eps": 1.0e-8, "weight_decay": 0.01}
    config = load_config(tiny_config(model={"name": "mlp", "options": {"hidden": [16]}}, optimizer=adamw,
                                     eta0=1e-3, base_batch=8, batch_sizes=[8, 32], strategies=["lsr"],
                                     warmup_epochs=1, epochs=1))
    run = run_config(config, RunKey("tiny", "lsr", 32, 0))
    last = branching_engine.train_base(run, 2)["checkpoints"][-1]
    built = []
    real = parts.build_packed_model
    monkeypatch.setattr(parts, "build_packed_model", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    alone = train_pack([run], progress=False)[0]
    assert last["step"] == alone.steps_total
    assert all(torch.equal(saved, trained) for saved, trained in zip(last["params"], built[-1].params))


def test_a_branch_is_plain_sgd_at_k_times_the_batch_and_rate_from_the_checkpoint():
    """k = 2 from the last checkpoint, momentum 0: w <- w - 2 lr g on batches of 2B from the branch's own
    randperm, recomputed with a plain module; losses on the training subset at steps 2 and 4."""
    from batchscale.data import load_dataset
    from batchscale.models import build_model

    torch.set_num_threads(1)
    run = tiny_run(model={"name": "linear"}, epochs=1, batch_size=32, optimizer={"momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
                                                                              "grad_clip": None})
    checkpoint = branching_engine.train_base(run, 2)["checkpoints"][-1]
    branch = branching_engine.train_branch(run, checkpoint, 2, 256, "linear", seed=7, evaluations=2)
    assert (branch["batch_size"], branch["steps"], branch["eval_steps"]) == (64, 4, [2, 4])
    splits = load_dataset(run["dataset"])
    net = build_model(run["model"], splits.spec)
    with torch.no_grad():
        for p, saved in zip(net.parameters(), checkpoint["params"]):
            p.copy_(saved[0])
    x, y = splits.train_x.float(), splits.train_y
    n = x.shape[0]
    subset = torch.randperm(n, generator=torch.Generator().manual_seed(104729))[:256]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(7))
    lr = 2 * checkpoint["lr"]
    expected = []
    for step in range(4):
        index = perm[64 * step:64 * (step + 1)]
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x[index]), y[index]).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
            if step + 1 in (2, 4):
                expected.append(float(torch.nn.functional.cross_entropy(net(x[subset]), y[subset])))
    np.testing.assert_allclose(branch["losses"], expected, rtol=1e-5)


@pytest.mark.parametrize("study, key", [
    ({"branching": dict(BRANCHING, k=[2, 4])}, "branching.k"),
    ({"noise_scale": {"batch_small": 64, "batch_big": 32}}, "noise_scale.batch_small"),
])
def test_a_bad_noise_or_branching_key_is_named(study, key):
    from batchscale.errors import ConfigError
    from batchscale.validate import load_config

    with pytest.raises(ConfigError, match=f"studies.tiny.{key}"):
        load_config(tiny_config(**study))
