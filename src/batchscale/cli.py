"""Command line: `python -m batchscale <stage> ...`; every Snakemake rule calls one of these."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from batchscale.errors import BatchscaleError, OutputNotWritable


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


def _train(args) -> None:
    from batchscale.spec.runs import resolve_run
    from batchscale.engine.pack import train_pack
    from batchscale.jobs.packs import runs_from_json
    from batchscale.store.traces import write_trace

    runs = runs_from_json(args.runs_json) if args.runs_json else [json.loads(args.run_json)]
    # a round-2 trial of `tuned` reads its rate from round 1's result now (config.resolve_refinement)
    runs = [resolve_run(run) for run in runs]
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


def _cube(args) -> None:
    from batchscale.store.cube import build_cube, write_cube

    study_config = json.loads(args.study_json)
    cube = build_cube(args.traces, args.study, study_config)
    write_cube(cube, args.output)
    print(f"cube {dict(cube.sizes)} -> {args.output}", file=sys.stderr)


def _tuning_round1(args) -> None:
    from batchscale.analysis.tuned_tables import round_one_best
    from batchscale.store.cube import build_cube

    study = json.loads(args.study_json)
    result = round_one_best(build_cube(args.traces, args.study, study), study)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"round 1 best lr: { {m: b['lr'] for m, b in result['best'].items()} } -> {args.output}", file=sys.stderr)


def _resolve_config(args) -> None:
    """Validate the config given as JSON on stdin and print it resolved (jobs.config_cache runs this)."""
    from batchscale.validate import load_config

    json.dump(load_config(json.load(sys.stdin)), sys.stdout, sort_keys=True)


def _validate(args) -> None:
    from batchscale.spec.runs import iter_runs
    from batchscale.validate import load_config

    config = load_config(args.config)
    runs = list(iter_runs(config))
    print(f"{args.config}: valid; {len(config['studies'])} studies, {len(runs)} training runs")


def _tables(args) -> None:
    from batchscale.analysis.study import write_study_tables
    from batchscale.report.critical_lines import critical_batch_lines as headline

    result = write_study_tables(args.cube, json.loads(args.study_json), args.out)
    for line in headline(result["critical_batch"]):  # into the rule's log: the study's numbers in words
        print(line, file=sys.stderr)


def _tuned_figures(args) -> None:
    from batchscale.report.figures import draw_tuned_figures

    draw_tuned_figures(args.tables, json.loads(args.study_json), args.out)


def _figures(args) -> None:
    from batchscale.report.figures import draw_study_figures

    draw_study_figures(args.cube, json.loads(args.study_json), args.out, args.tables)


def _compare_tables(args) -> None:
    from batchscale.analysis.comparison import write_comparison_table

    write_comparison_table(args.cubes, json.loads(args.spec_json), json.loads(args.studies_json), args.output)


def _compare(args) -> None:
    from batchscale.report.figures import draw_comparison

    draw_comparison(args.table, json.loads(args.spec_json), args.out, args.name)


def _plan(args) -> None:
    from batchscale.jobs.plan import print_plan

    print_plan(args.config, gpu_tflops=args.gpu_tflops, utilisation=args.utilisation)


def _export_tensorboard(args) -> None:
    # imported here, as every stage is: a train job should not pay for modules it never runs
    from batchscale.report.tensorboard import export_tensorboard

    out = Path(args.out) if args.out else Path(args.results) / "tensorboard"
    runs = export_tensorboard(args.results, out)
    print(f"wrote {len(runs)} run(s) to {out}; view them with: tensorboard --logdir {out}")


def _threshold_option(text: str):
    """--threshold as a rule: JSON for the object forms, else the name or ``kind:value`` text."""
    from batchscale.analysis.external import AnalysisInputError
    from batchscale.analysis.thresholds import parse_threshold_rule

    text = text.strip()
    if text.startswith("{"):
        try:
            rule = json.loads(text)
        except json.JSONDecodeError as err:
            raise AnalysisInputError(f"--threshold {text!r} is not valid JSON ({err.msg} at column {err.colno})")
    else:
        rule = text
    try:
        parse_threshold_rule(rule)
    except ValueError as err:
        raise AnalysisInputError(f"--threshold: {err}") from None
    return rule


def _writable_out_folder(out: str) -> Path:
    """--out must be a folder that can be created and written: refused before any work when it names an
    existing file, lies under a file, or cannot be written."""
    from batchscale.analysis.external import AnalysisInputError

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise AnalysisInputError(f"--out {out}: is an existing file, not a folder; name a folder for the tables")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".batchscale-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise AnalysisInputError(f"--out {out}: cannot write there ({err.strerror or type(err).__name__})") from None
    return folder


def _analyze(args) -> None:
    from batchscale.analysis import external
    from batchscale.report.critical_lines import critical_batch_lines
    from batchscale.report.figures import draw_external_figures

    rule = _threshold_option(args.threshold)
    if args.base_batch is not None and args.base_batch <= 0:
        raise external.AnalysisInputError(f"--base-batch {args.base_batch}: must be a positive batch size")
    out = _writable_out_folder(args.out)
    result = external.analyze_external(args.csv, out, threshold_rule=rule, base_batch=args.base_batch,
                                       figure_hook=draw_external_figures)
    for line in critical_batch_lines(result["critical_batch"]):
        print(line)
    print(f"wrote {', '.join(sorted(p.name for p in result['paths'].values()))} and figures to {out}")


# `batchscale analyze --help`; the contract is analysis/external.py's (kept here, not imported from there,
# so that building the parser does not import pandas for every train job)
ANALYZE_DESCRIPTION = """\
Analyse a batch-size sweep run elsewhere, from one CSV: iterations to the target k(m), speedup over the
base batch, regimes and the critical batch size, as a study's tables.

Input CSV: a header row, then one row per record; column order is free, extra columns are ignored.
Two layouts, told apart by the header:

  traces           batch_size,step,loss[,seed][,strategy]
                   one row per evaluation point of a run; k(m) is the first step with loss <= eps,
                   interpolated in log(step), eps set by --threshold; an empty loss is skipped; a run
                   whose loss never reaches eps counts as never reached
  steps-to-target  batch_size,steps[,seed][,strategy]
                   k(m) measured already, one row per batch size and seed; write inf in steps for a
                   target never reached (an empty cell is refused); --threshold is ignored

  batch_size  a positive integer; at least 2 per strategy, the base batch among them
  seed        an integer, one run per (strategy, batch_size, seed); without the column, one seed, 0
  strategy    a name; without the column every row belongs to strategy "external"

Seeds: k_mean is the mean over the seeds of a batch size, with an interval over them
(interval_kind: percentile_bootstrap from 5 seeds, student_t with 2-4, none with one). A batch size
where any seed never reached the target has k_mean inf; a (batch_size, seed) absent from the file is
missing, not never reached (n_seeds counts the seeds with data). The base batch is --base-batch,
default the smallest; in a steps-to-target CSV at least one of its seeds must reach the target.
"""
ANALYZE_EPILOG = """\
Output, in --out: speedup.csv (one row per strategy x batch size; metric "loss" for traces, "steps"
for steps-to-target, whose threshold is empty and threshold_rule "given"), speedup_common.csv (traces
only: every strategy at one common eps), critical_batch.json (B_crit, S_min and the overhead-based
critical batch per strategy), figures (.png and .svg), and the headline on stdout. A never-reached
batch size is kept as a row: k_mean and examples_to_threshold inf, speedup and efficiency empty,
regime and status not_reached. The columns are those of a study's speedup.csv (README, "What you get").

Example (steps-to-target, two seeds; batch 64 never reached the target with seed 1):

  batch_size,seed,steps
  16,0,1000
  16,1,1100
  32,0,520
  32,1,560
  64,0,300
  64,1,inf
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one run, or a pack of runs together, and write their HDF5 traces")
    one_or_pack = train.add_mutually_exclusive_group(required=True)
    one_or_pack.add_argument("--run-json", help="the resolved config of one run (JSON)")
    one_or_pack.add_argument("--runs-json", help="the resolved configs of a pack's runs (a JSON list, or "
                             "{shared, runs} as jobs.packs.pack_runs_json writes it)")
    train.add_argument("--output", help="the trace of --run-json")
    train.add_argument("--outputs", nargs="+", help="the traces of --runs-json, in the same order")
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--checkpoint", default=None, help="checkpoint file for resuming after a kill")
    train.add_argument("--code", default=None, help="fingerprint of the code, recorded in each trace")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(handler=_train)

    cube = sub.add_parser("cube", help="aggregate a study's traces into an xarray cube")
    cube.add_argument("--study", required=True)
    cube.add_argument("--study-json", required=True)
    cube.add_argument("--output", required=True)
    cube.add_argument("traces", nargs="+")
    cube.set_defaults(handler=_cube)

    round1 = sub.add_parser("tuning-round1", help="each batch size's best first-round trial of a tuned search")
    round1.add_argument("--study", required=True)
    round1.add_argument("--study-json", required=True, help="the resolved study config")
    round1.add_argument("--output", required=True, help="the JSON file round 2 reads its rates from")
    round1.add_argument("traces", nargs="+", help="the first-round trial traces")
    round1.set_defaults(handler=_tuning_round1)

    resolve = sub.add_parser("resolve-config", help="validate a config given as JSON on stdin; print it resolved")
    resolve.set_defaults(handler=_resolve_config)

    validate = sub.add_parser("validate", help="validate a config file")
    validate.add_argument("config")
    validate.set_defaults(handler=_validate)

    tables = sub.add_parser("tables", help="speedup, critical batch and accuracy tables of a study")
    tables.add_argument("--cube", required=True)
    tables.add_argument("--study-json", required=True)
    tables.add_argument("--out", required=True)
    tables.set_defaults(handler=_tables)

    figures = sub.add_parser("figures", help="draw a study's figures")
    figures.add_argument("--cube", required=True)
    figures.add_argument("--tables", required=True,
                         help="the folder of the study's analysis files (speedup.csv, critical_batch.json, ...)")
    figures.add_argument("--study-json", required=True)
    figures.add_argument("--out", required=True)
    figures.set_defaults(handler=_figures)
    tuned = sub.add_parser("tuned-figures", help="draw the figures of a study's tuned search")
    tuned.add_argument("--tables", required=True, help="folder with tuned.csv, tuned_trials.csv, "
                       "speedup_common.csv and critical_batch.json")
    tuned.add_argument("--study-json", required=True)
    tuned.add_argument("--out", required=True)
    tuned.set_defaults(handler=_tuned_figures)

    compare_tables = sub.add_parser("compare-tables",
                                    help="speedup rows of a group of studies at their own and a common threshold")
    compare_tables.add_argument("--spec-json", required=True)
    compare_tables.add_argument("--studies-json", required=True)
    compare_tables.add_argument("--output", required=True)
    compare_tables.add_argument("cubes", nargs="+")
    compare_tables.set_defaults(handler=_compare_tables)

    compare = sub.add_parser("compare", help="draw the speedup curves of a group of studies from its table")
    compare.add_argument("--name", required=True)
    compare.add_argument("--spec-json", required=True)
    compare.add_argument("--table", required=True, help="the comparison's speedup.csv (compare-tables)")
    compare.add_argument("--out", required=True)
    compare.set_defaults(handler=_compare)

    plan = sub.add_parser("plan", help="jobs, steps and compute a config will cost, before running it")
    plan.add_argument("config")
    plan.add_argument("--gpu-tflops", type=float, default=400.0,
                      help="sustained accelerator rate assumed for GPU-hours (default 400 TFLOP/s, bf16 H100-class)")
    plan.add_argument("--utilisation", type=float, default=0.4, help="fraction of that rate achieved (default 0.4)")
    plan.set_defaults(handler=_plan)

    board = sub.add_parser("export-tensorboard", help="write every run's curves as TensorBoard scalars",
                           description="Write the curves of every trace (train_loss, test_loss, train_acc, "
                           "test_acc, lr and any other curve the trace holds) as TensorBoard scalars at the "
                           "trace's steps: one event file per run in OUT/{study}/{strategy}/bs{m}/seed{s}"
                           "[_trial{t}]. Needs no TensorBoard to write; view with `tensorboard --logdir OUT`.")
    board.add_argument("results", help="a results folder, or one study's: every *.h5 trace below it")
    board.add_argument("--out", default=None, help="folder for the event files (default: RESULTS/tensorboard)")
    board.set_defaults(handler=_export_tensorboard)

    analyze = sub.add_parser("analyze", help="analyse a sweep run elsewhere, from a CSV",
                             description=ANALYZE_DESCRIPTION, epilog=ANALYZE_EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    analyze.add_argument("csv", help="the sweep: a traces or a steps-to-target CSV (layouts above)")
    analyze.add_argument("--out", required=True, help="folder for the tables and figures (created)")
    analyze.add_argument("--threshold", default="lower_quartile_of_largest",
                         help='eps of a traces CSV: lower_quartile_of_largest (default), quantile_of_largest:q, '
                              'fixed:v, or JSON like {"fixed": 0.1} / {"quantile_of_largest": 0.5}')
    analyze.add_argument("--base-batch", type=int, default=None,
                         help="m0, the batch size speedups are relative to (default: the smallest in the file)")
    analyze.set_defaults(handler=_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A study's own `package.module:callable` is found from the working directory, whichever way the command
    # was started (`python -m batchscale` puts it on the path, the `batchscale` script does not).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except BatchscaleError as err:
        print(f"batchscale: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file that cannot be read or written: one line, not a traceback
        print(f"batchscale: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0
