"""The branching DAG end to end on a tiny study: base run -> checkpoints -> branches -> one bracket per
checkpoint in local_critical_batch.csv, and its figure; and the base run over the engine's pieces is the
engine's own run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from batchscale import branching_run as brun
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
    base = brun.train_base(run, 3)
    alone = train_pack([run], progress=False)[0]
    last = base["checkpoints"][-1]
    assert last["step"] == alone.steps_total
    assert last["train_loss"] == alone.points["train_loss"][-1]  # same weights, bit for bit
    # k = 1 from the last checkpoint, with the engine's own rate, is that run continued: its loss moves on
    branch = brun.train_branch(run, last, 1, 256, "linear", seed=5, evaluations=2)
    assert branch["steps"] == 8 and branch["eval_steps"] == [4, 8] and len(branch["losses"]) == 2
    assert np.all(np.isfinite(branch["losses"])) and branch["losses"][-1] != last["train_loss"]
