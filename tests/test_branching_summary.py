"""The local critical batch by branching in the summary: summary.json's ``branching`` of a study that
branches, and its line in summary.md, from a hand-made local_critical_batch.csv."""

from __future__ import annotations

import json

import pandas as pd

from batchscale.analysis import branching
from batchscale.cli import main as cli_main
from test_summary import tables  # noqa: F401  (the hand-made study tables)

BRANCHING = {"enabled": True, "strategy": "lsr", "batch_size": None, "seed": 0, "checkpoints": 4, "k": [1, 2, 4, 8],
             "delta_examples": 512, "tolerance": 0.05, "tolerance_kind": "relative"}
# smoothed loss after Delta per checkpoint (examples seen) and k; within 5% of k = 1 passes
LOSSES = {
    64: {1: 1.0, 2: 1.02, 4: 1.2, 8: 1.5},        # 2 passes, 4 fails: [8, 16)
    1024: {1: 0.5, 2: 0.6, 4: 0.7, 8: 0.8},       # only k = 1: < 8
    4096: {1: 0.2, 2: 0.2, 4: 0.205, 8: 0.209},   # every k: >= 32
    16384: {1: 0.1, 2: 0.2, 4: 0.1, 8: 0.3},      # 2 fails, 4 passes again: < 8, non-monotone
}


def local_table() -> pd.DataFrame:
    rows = [{"checkpoint_examples": examples, "base_batch": 4, "k": k, "loss": loss}
            for examples, by_k in LOSSES.items() for k, loss in by_k.items()]
    return branching.local_critical_table(pd.DataFrame(rows), 0.05, "relative")


def write_study(tmp_path, tables, with_branching: bool):  # noqa: F811
    study, critical, common = tables
    folder = tmp_path / "toy"
    folder.mkdir(exist_ok=True)
    (folder / "critical_batch.json").write_text(json.dumps(critical))
    common.to_csv(folder / "speedup.csv", index=False)
    common.to_csv(folder / "speedup_common.csv", index=False)
    study = {**study, "dataset": {"name": "digits"}, "model": {"name": "mlp"},
             "branching": BRANCHING if with_branching else {"enabled": False}}
    if with_branching:
        local_table().to_csv(folder / "local_critical_batch.csv", index=False)
    out = tmp_path / "summary.md"
    assert cli_main(["summary", "--studies-json", json.dumps({"toy": study}), "--results", str(tmp_path),
                     "--out", str(out), "--json", str(tmp_path / "summary.json")]) == 0
    return out.read_text(), json.loads((tmp_path / "summary.json").read_text())


def test_the_summary_gives_each_checkpoints_bracket(tmp_path, tables):  # noqa: F811
    text, numbers = write_study(tmp_path, tables, with_branching=True)
    b = numbers["studies"][0]["branching"]
    assert (b["strategy"], b["seed"], b["base_batch"], b["k"], b["delta_examples"]) == ("lsr", 0, 4, [1, 2, 4, 8], 512)
    assert [(c["examples"], c["bracket"], c["lower"], c["upper"]) for c in b["checkpoints"]] == [
        (64, "interval", 8.0, 16.0), (1024, "below", 4.0, 8.0), (4096, "at_least", 32.0, None),
        (16384, "below", 4.0, 8.0)]
    assert [c["non_monotone"] for c in b["checkpoints"]] == [False, False, False, True]
    assert ("- local critical batch by branching from lsr at B = 4, seed 0 (branches of 512 examples at k·B for "
            "k = 1, 2, 4, 8; the largest k·B whose loss stays within 5% of k = 1's loss): at 64 examples in "
            "[8, 16); at 1,024 examples < 8; at 4,096 examples >= 32; at 16,384 examples < 8* (* a larger k "
            "passed again after the first that failed: noisy)\n") in text


def test_a_study_that_does_not_branch_has_no_such_line(tmp_path, tables):  # noqa: F811
    text, numbers = write_study(tmp_path, tables, with_branching=False)
    assert "branching" not in numbers["studies"][0] and "local critical batch" not in text
