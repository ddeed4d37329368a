"""Commands of the prediction of B_crit from short runs: predict (prediction.json of a study),
prediction-validation (the validation table of every study that predicts and runs tuned) and
prediction-figure (its figure)."""

from __future__ import annotations

import json
from pathlib import Path

from batchscale.cli import Command, arg


def predict(args) -> None:
    from batchscale.analysis.prediction import prediction_document
    from batchscale.store.records import read_json
    from batchscale.store.traces import read_trace

    study = json.loads(args.study_json)
    traces = [read_trace(path) for path in args.traces]
    grid = [read_trace(path) for path in args.grid_traces or []]
    critical = read_json(args.critical) if args.critical else None
    document = prediction_document(args.study, study, traces, grid, critical, int(study["noise_scale"]["window"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def prediction_validation(args) -> None:
    from batchscale.analysis.prediction_validation import validation_table
    from batchscale.store.records import read_json

    studies = json.loads(args.studies_json)
    predictions = {Path(path).parent.name: json.loads(Path(path).read_text()) for path in args.predictions or []}
    criticals = {Path(path).parent.name: read_json(path) for path in args.criticals or []}
    table = validation_table(studies, predictions, criticals)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)


def prediction_figure(args) -> None:
    import pandas as pd

    from batchscale.report.figures.prediction import draw_validation_figure

    draw_validation_figure(pd.read_csv(args.table), args.out_dir, args.name)


COMMANDS = (
    Command("predict", "predict a study's critical batch from its prediction runs (prediction.json)", predict, (
        arg("--study", required=True), arg("--study-json", required=True),
        arg("--traces", nargs="+", required=True, help="the prediction runs' traces"),
        arg("--grid-traces", nargs="*", help="the study grid's traces (their CPU seconds, for the cost)"),
        arg("--critical", default=None, help="the study's critical_batch.json (the target loss when "
                                             "predict.target_loss is null)"),
        arg("--out", required=True))),
    Command("prediction-validation", "predicted against measured tuned B_crit, one row per study",
            prediction_validation, (
                arg("--studies-json", required=True),
                arg("--predictions", nargs="*", help="results/<study>/prediction.json files"),
                arg("--criticals", nargs="*", help="results/<study>/critical_batch.json files"),
                arg("--out", required=True))),
    Command("prediction-figure", "draw the validation figure from its table", prediction_figure, (
        arg("--table", required=True), arg("--out-dir", required=True), arg("--name", required=True))),
)
