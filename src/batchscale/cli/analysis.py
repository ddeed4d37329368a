"""Commands of the cube and analysis stages: cube, tuning-round1, tables, compare-tables, theory, branch-table,
and analyze (a sweep run elsewhere)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from batchscale.cli import Command, arg


def cube(args) -> None:
    from batchscale.store.cube import build_cube, write_cube

    built = build_cube(args.traces, args.study, json.loads(args.study_json))
    write_cube(built, args.output)
    print(f"cube {dict(built.sizes)} -> {args.output}", file=sys.stderr)


def tuning_round1(args) -> None:
    from batchscale.analysis.tuned_tables import round_one_best
    from batchscale.store.cube import build_cube

    study = json.loads(args.study_json)
    result = round_one_best(build_cube(args.traces, args.study, study), study)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"round 1 best lr: { {m: b['lr'] for m, b in result['best'].items()} } -> {args.output}", file=sys.stderr)


def tables(args) -> None:
    from batchscale.analysis.study import write_study_tables
    from batchscale.report.critical_lines import critical_batch_lines

    result = write_study_tables(args.cube, json.loads(args.study_json), args.out, study=args.study)
    for line in critical_batch_lines(result["critical_batch"]):  # into the rule's log: the numbers in words
        print(line, file=sys.stderr)


def compare_tables(args) -> None:
    from batchscale.analysis.comparison import write_comparison_table

    write_comparison_table(args.cubes, json.loads(args.spec_json), json.loads(args.studies_json), args.output)


def theory(args) -> None:
    from batchscale.analysis.theory_check import theory_document

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(theory_document(json.loads(args.study_json)), indent=2) + "\n")


def branch_table(args) -> None:
    from batchscale.analysis.branching import branch_table as table_of, local_critical_table

    settings = json.loads(args.branching_json)
    rows = [row for path in args.branches for row in json.loads(Path(path).read_text())["branches"]]
    result = local_critical_table(table_of(rows, settings["smoothing"]), settings["tolerance"],
                                  settings["tolerance_kind"])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.output, index=False)


def threshold_option(text: str):
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


def writable_out_folder(out: str) -> Path:
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


def analyze(args) -> None:
    from batchscale.analysis import external
    from batchscale.report.critical_lines import critical_batch_lines
    from batchscale.report.figures import draw_external_figures

    rule = threshold_option(args.threshold)
    if args.base_batch is not None and args.base_batch <= 0:
        raise external.AnalysisInputError(f"--base-batch {args.base_batch}: must be a positive batch size")
    out = writable_out_folder(args.out)
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
                   whose loss never reaches eps counts as never reached; inf in loss means the run
                   blew up there: never reached from that point, and not a completed run (diverged)
  steps-to-target  batch_size,steps[,seed][,strategy]
                   k(m) measured already, one row per batch size and seed; write inf in steps for a
                   target never reached (an empty cell is refused); --threshold is ignored

  batch_size  a positive integer; at least 2 per strategy, the base batch among them
  seed        an integer, one run per (strategy, batch_size, seed); without the column, one seed, 0
  strategy    a name; without the column every row belongs to strategy "external"; a row with an
              empty strategy is refused (its line number named), never dropped

inf (steps or loss) means "never reached", not a completed run: such a batch size has k_mean inf and
no speedup.

Seeds: k_mean is the mean over the seeds of a batch size, with an interval over them
(interval_kind: percentile_bootstrap from 5 seeds, student_t with 2-4, none with one, "none: one
distinct value" when every seed gave the same value: no interval, never low = high = estimate;
normal_approximation past 1000 seeds, so 125,000 seeds per batch size take seconds). A batch size
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


COMMANDS = (
    Command("cube", "aggregate a study's traces into an xarray cube", cube, (
        arg("--study", required=True), arg("--study-json", required=True), arg("--output", required=True),
        arg("traces", nargs="+"))),
    Command("tuning-round1", "each batch size's best first-round trial of a tuned search", tuning_round1, (
        arg("--study", required=True), arg("--study-json", required=True, help="the resolved study config"),
        arg("--output", required=True, help="the JSON file round 2 reads its rates from"),
        arg("traces", nargs="+", help="the first-round trial traces"))),
    Command("tables", "speedup, critical batch and accuracy tables of a study", tables, (
        arg("--cube", required=True), arg("--study", required=True), arg("--study-json", required=True),
        arg("--out", required=True))),
    Command("compare-tables", "speedup rows of a group of studies at their own and a common threshold",
            compare_tables, (arg("--spec-json", required=True), arg("--studies-json", required=True),
                             arg("--output", required=True), arg("cubes", nargs="+"))),
    Command("theory", "lambda_1, beta and the predicted lsr breakdown of a least-squares study", theory, (
        arg("--study-json", required=True), arg("--out", required=True))),
    Command("branch-table", "local_critical_batch.csv from a study's branch files", branch_table, (
        arg("--branching-json", required=True), arg("--output", required=True), arg("branches", nargs="+"))),
    Command("analyze", "analyse a sweep run elsewhere, from a CSV", analyze, (
        arg("csv", help="the sweep: a traces or a steps-to-target CSV (layouts above)"),
        arg("--out", required=True, help="folder for the tables and figures (created)"),
        arg("--threshold", default="lower_quartile_of_largest",
            help='eps of a traces CSV: lower_quartile_of_largest (default), quantile_of_largest:q, fixed:v, or '
                 'JSON like {"fixed": 0.1} / {"quantile_of_largest": 0.5}'),
        arg("--base-batch", type=int, default=None,
            help="m0, the batch size speedups are relative to (default: the smallest in the file)")),
        {"description": ANALYZE_DESCRIPTION, "epilog": ANALYZE_EPILOG,
         "formatter_class": argparse.RawDescriptionHelpFormatter}),
)
