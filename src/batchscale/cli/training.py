"""Commands of the training stage and of the config: train, branch-base, branch, validate, resolve-config, plan."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from batchscale.cli import Command, arg
from batchscale.errors import OutputNotWritable


def check_writable(paths) -> None:
    """Create each file's folder and write a probe file there, so a blocked folder fails now, not after training."""
    for folder in sorted({Path(path).parent for path in paths}):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe")
            os.close(descriptor)
            os.unlink(probe)
        except OSError as err:
            raise OutputNotWritable(f"cannot write to {folder}: {err.strerror or err}; "
                                    f"fix its permissions or remove what blocks it") from None


def train(args) -> None:
    from batchscale.engine.pack import train_pack
    from batchscale.jobs.packs import runs_from_json
    from batchscale.spec.runs import resolve_run
    from batchscale.store.traces import write_trace

    runs = runs_from_json(args.runs_json) if args.runs_json else [json.loads(args.run_json)]
    runs = [resolve_run(run) for run in runs]  # a round-2 trial of `tuned` reads its rate from round 1's result
    outputs = args.outputs or [args.output]
    if len(outputs) != len(runs):
        raise SystemExit(f"batchscale train: {len(runs)} runs but {len(outputs)} outputs")
    check_writable(outputs + ([args.checkpoint] if args.checkpoint else []))
    for output in outputs:
        for stale in Path(output).parent.glob(Path(output).name + ".tmp*"):
            stale.unlink()  # left by a job killed while writing its trace
    results = train_pack(runs, threads=args.threads, checkpoint_path=args.checkpoint, progress=not args.quiet)
    for result, output in zip(results, outputs):
        write_trace(result, output, code=args.code)
        print(f"{result.status}: {result.steps_total} steps in {result.wall_seconds:.1f} s "
              f"(evaluation {result.eval_seconds:.1f} s) -> {output}", file=sys.stderr)
    if args.checkpoint:
        Path(args.checkpoint).unlink(missing_ok=True)  # the traces are complete; the checkpoint is spent


def write_json(document, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def branch_base(args) -> None:
    import torch

    from batchscale.engine.branch import save_base, train_base

    torch.set_num_threads(1)
    save_base(train_base(json.loads(args.run_json), args.checkpoints), args.output)


def branch(args) -> None:
    import torch

    from batchscale.engine.branch import branch_checkpoint, load_base

    torch.set_num_threads(1)
    saved, settings = load_base(args.base), json.loads(args.branching_json)
    rows = []
    if args.index < len(saved["checkpoints"]):  # rounding may merge early checkpoint steps: fewer files carry rows
        rows = branch_checkpoint(saved["run"], saved["checkpoints"][args.index], args.index, settings["k"],
                                 settings["delta_examples"], settings["lr_rule"], settings["evaluations"])
    write_json({"index": args.index, "branches": rows}, args.output)


def resolve_config(args) -> None:
    """Validate the config given as JSON on stdin and print it resolved (jobs.config_cache runs this)."""
    from batchscale.validate import load_config

    json.dump(load_config(json.load(sys.stdin)), sys.stdout, sort_keys=True)


def validate(args) -> None:
    from batchscale.spec.studies import study_run_count
    from batchscale.validate import load_config

    config = load_config(args.config)
    runs = sum(study_run_count(study) for study in config["studies"].values())
    print(f"{args.config}: valid; {len(config['studies'])} studies, {runs} training runs")


def plan(args) -> None:
    from batchscale.jobs.plan import print_plan

    print_plan(args.config, gpu_tflops=args.gpu_tflops, utilisation=args.utilisation)


COMMANDS = (
    Command("train", "train one run, or a pack of runs together, and write their HDF5 traces", train, (
        arg("--one-of", choices=(
            arg("--run-json", help="the resolved config of one run (JSON)"),
            arg("--runs-json", help="the resolved configs of a pack's runs (a JSON list, or {shared, runs} "
                                    "as jobs.packs.pack_runs_json writes it)"))),
        arg("--output", help="the trace of --run-json"),
        arg("--outputs", nargs="+", help="the traces of --runs-json, in the same order"),
        arg("--threads", type=int, default=1),
        arg("--checkpoint", default=None, help="checkpoint file for resuming after a kill"),
        arg("--code", default=None, help="fingerprint of the code, recorded in each trace"),
        arg("--quiet", action="store_true"))),
    Command("branch-base", "train a branching study's base run and save its checkpoints", branch_base, (
        arg("--run-json", required=True), arg("--checkpoints", type=int, required=True),
        arg("--output", required=True))),
    Command("branch", "train every branch k x B of one checkpoint of the base run", branch, (
        arg("--base", required=True), arg("--index", type=int, required=True),
        arg("--branching-json", required=True), arg("--output", required=True))),
    Command("validate", "validate a config file", validate, (arg("config"),)),
    Command("resolve-config", "validate a config given as JSON on stdin; print it resolved", resolve_config),
    Command("plan", "jobs, steps and compute a config will cost, before running it", plan, (
        arg("config"),
        arg("--gpu-tflops", type=float, default=400.0,
            help="sustained accelerator rate assumed for GPU-hours (default 400 TFLOP/s, bf16 H100-class)"),
        arg("--utilisation", type=float, default=0.4, help="fraction of that rate achieved (default 0.4)"))),
)
