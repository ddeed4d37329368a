"""The branching rules' command line: `python -m batchscale.branching_run base|branch|table|figure`.

What the Snakemake rules of workflow/rules/branching.smk call: the training is batchscale.engine.branch, the
local critical batch batchscale.analysis.branching, the figure batchscale.report.figures.noise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from batchscale.analysis import branching as br
from batchscale.engine.branch import branch_checkpoint, load_base, save_base, train_base


def branch_table(rows: list[dict], smoothing: dict | None = None) -> pd.DataFrame:
    """Tidy (checkpoint_examples, base_batch, k, batch_size, lr, steps, examples, loss), loss smoothed,
    ready for `analysis.branching.local_critical_table`."""
    smoothing = smoothing or {}
    columns = ("checkpoint_examples", "base_batch", "k", "batch_size", "lr", "steps", "examples")
    table = pd.DataFrame([{key: row[key] for key in columns} for row in rows], columns=list(columns))
    table["loss"] = [br.smoothed_loss(row["losses"], smoothing.get("kind", "last_mean"), smoothing.get("points", 3),
                                      smoothing.get("ema_alpha", 0.5)) for row in rows]
    return table


def _write_json(document, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m batchscale.branching_run")
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("base", help="train the base run and save its checkpoints")
    base.add_argument("--run-json", required=True)
    base.add_argument("--checkpoints", type=int, required=True)
    base.add_argument("--output", required=True)
    branch = sub.add_parser("branch", help="every branch k of one checkpoint")
    branch.add_argument("--base", required=True)
    branch.add_argument("--index", type=int, required=True)
    branch.add_argument("--branching-json", required=True)
    branch.add_argument("--output", required=True)
    table = sub.add_parser("table", help="local_critical_batch.csv from the branch files")
    table.add_argument("--branching-json", required=True)
    table.add_argument("--output", required=True)
    table.add_argument("branches", nargs="+")
    figure = sub.add_parser("figure", help="local_critical_batch.png/.svg from the table")
    figure.add_argument("--table", required=True)
    figure.add_argument("--study", required=True)
    figure.add_argument("--out", required=True)
    return parser


def main(argv=None) -> int:
    """Run one subcommand (see `_parser`); returns the exit status."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "base":
        save_base(train_base(json.loads(args.run_json), args.checkpoints), args.output)
    elif args.command == "branch":
        saved, cfg = load_base(args.base), json.loads(args.branching_json)
        checkpoints = saved["checkpoints"]
        rows = []
        if args.index < len(checkpoints):  # rounding may merge early checkpoint steps: fewer files carry rows
            rows = branch_checkpoint(saved["run"], checkpoints[args.index], args.index, cfg["k"],
                                     cfg["delta_examples"], cfg["lr_rule"], cfg["evaluations"])
        _write_json({"index": args.index, "branches": rows}, args.output)
    elif args.command == "table":
        cfg = json.loads(args.branching_json)
        rows = [row for path in args.branches for row in json.loads(Path(path).read_text())["branches"]]
        result = br.local_critical_table(branch_table(rows, cfg["smoothing"]), cfg["tolerance"], cfg["tolerance_kind"])
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(args.output, index=False)
    else:
        # deferred: matplotlib is for this subcommand only, and costs the training subcommands a second
        from batchscale.report.figures.base import save_figure
        from batchscale.report.figures.noise import local_critical_batch_figure

        save_figure(local_critical_batch_figure(pd.read_csv(args.table), args.study), args.out,
                    "local_critical_batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
