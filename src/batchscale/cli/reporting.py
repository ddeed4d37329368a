"""Commands of the report stage: figures, tuned-figures, compare, theory-figure, branch-figure, summary and
export-tensorboard. They draw and write what the analysis computed."""

from __future__ import annotations

import json
from pathlib import Path

from batchscale.cli import Command, arg


def figures(args) -> None:
    from batchscale.report.figures import draw_study_figures

    draw_study_figures(args.cube, json.loads(args.study_json), args.out, args.tables, study=args.study,
                       figures=args.names)


def tuned_figures(args) -> None:
    from batchscale.report.figures import draw_tuned_figures

    draw_tuned_figures(args.tables, json.loads(args.study_json), args.out)


def compare(args) -> None:
    from batchscale.report.figures import draw_comparison

    draw_comparison(args.table, json.loads(args.spec_json), args.out, args.name)


def theory_figure(args) -> None:
    from batchscale.report.figures.base import save_figure
    from batchscale.report.figures.theory_check import theory_figure as draw
    from batchscale.store.records import read_csv

    out = Path(args.out)
    save_figure(draw(json.loads(Path(args.theory).read_text()), read_csv(args.common)), out.parent, out.name)


def branch_figure(args) -> None:
    from batchscale.report.figures.base import save_figure
    from batchscale.report.figures.noise import local_critical_batch_figure
    from batchscale.store.records import read_csv

    save_figure(local_critical_batch_figure(read_csv(args.table), args.study), args.out, "local_critical_batch")


def summary(args) -> None:
    from batchscale.analysis.headline import headlines_json, run_headlines
    from batchscale.report.summary import render_summary

    text = headlines_json(run_headlines(Path(args.results), json.loads(args.studies_json),
                                        json.loads(args.comparisons_json or "{}")))
    Path(args.json).write_text(text)  # the analysis's numbers; the markdown only renders them
    page = render_summary(json.loads(text))
    if args.validation:  # the prediction against the grid leads the page
        import pandas as pd

        from batchscale.report.prediction_summary import lead_with, validation_section

        page = lead_with(page, validation_section(pd.read_csv(args.validation)))
    Path(args.out).write_text(page)


def export_tensorboard(args) -> None:
    from batchscale.report.tensorboard import export_tensorboard as export

    out = Path(args.out) if args.out else Path(args.results) / "tensorboard"
    runs = export(args.results, out)
    print(f"wrote {len(runs)} run(s) to {out}; view them with: tensorboard --logdir {out}")


COMMANDS = (
    Command("figures", "draw a study's figures", figures, (
        arg("--cube", required=True), arg("--study", default=None),
        arg("--names", nargs="+", default=None, help="the figures to draw (default: the manifest's STUDY_FIGURES)"),
        arg("--tables", required=True, help="the folder of the study's analysis files"),
        arg("--study-json", required=True), arg("--out", required=True))),
    Command("tuned-figures", "draw the figures of a study's tuned search", tuned_figures, (
        arg("--tables", required=True, help="folder with tuned.csv, tuned_trials.csv, speedup_common.csv and "
                                            "critical_batch.json"),
        arg("--study-json", required=True), arg("--out", required=True))),
    Command("compare", "draw the speedup curves of a group of studies from its table", compare, (
        arg("--name", required=True), arg("--spec-json", required=True),
        arg("--table", required=True, help="the comparison's speedup.csv (compare-tables)"),
        arg("--out", required=True))),
    Command("theory-figure", "the theory figure of a least-squares study", theory_figure, (
        arg("--theory", required=True), arg("--common", required=True),
        arg("--out", required=True, help="path without extension; .png and .svg are written"))),
    Command("branch-figure", "local_critical_batch.png/.svg from its table", branch_figure, (
        arg("--table", required=True), arg("--study", required=True), arg("--out", required=True))),
    Command("summary", "the summary of a run (markdown and its numbers as JSON) from every study's files", summary, (
        arg("--studies-json", required=True), arg("--results", default="results"), arg("--out", required=True),
        arg("--json", required=True), arg("--comparisons-json", default=None,
                                           help="{name: spec} of the comparisons to summarise"),
        arg("--validation", default=None, help="the prediction's validation table: its section leads the page"))),
    Command("export-tensorboard", "write every run's curves as TensorBoard scalars", export_tensorboard, (
        arg("results", help="a results folder, or one study's: every *.h5 trace below it"),
        arg("--out", default=None, help="folder for the event files (default: RESULTS/tensorboard)")),
        {"description": "Write the curves of every trace (train_loss, test_loss, train_acc, test_acc, lr and any "
                        "other curve the trace holds) as TensorBoard scalars at the trace's steps: one event file "
                        "per run in OUT/{study}/{strategy}/bs{m}/seed{s}[_trial{t}]. Needs no TensorBoard to write; "
                        "view with `tensorboard --logdir OUT`."}),
)
