"""Every file the workflow writes: path templates and the lists of tables and figures, in one place.

The Snakemake rules (workflow/rules/common.smk), the commands that write the files and the tests all read
these, so a new table or figure is one entry here (plus the code that makes it and its report caption).
Templates are `str.format` patterns; `{study}`, `{strategy}`, ... are also Snakemake wildcards.
"""

from __future__ import annotations

from dataclasses import dataclass

RESULTS = "results"
STUDY_DIR = "results/{study}"
FIGURES_DIR = "results/{study}/figures"
# One trace per run; `{trial}` is empty for the fixed strategies and TRIAL_PART for a trial of `tuned`:
# results/s/traces/tuned/bs64/seed2_trial17.h5.
TRACE_PATH = "results/{study}/traces/{strategy}/bs{batch_size}/seed{seed}{trial}.h5"
TRIAL_PART = "_trial{trial}"
CUBE_PATH = "results/{study}/cube.nc"
# Round 1's best trial per batch size (rule tuning_refine_ranges): the file round-2 runs read their rate from.
ROUND1_PATH = "results/{study}/tuning_round1.json"
PACK_CHECKPOINT = "results/{study}/checkpoints/bs{batch_size}/{part}.pt"
PACK_LOG = "logs/{study}/train/bs{batch_size}/{part}.log"
BRANCHING_BASE = "results/{study}/branching/base.pt"
BRANCHING_CHECKPOINT = "results/{study}/branching/checkpoint{index}.json"
THEORY_PATH = "results/{study}/theory.json"
COMPARISON_DIR = "results/comparisons/{comparison}"
# One summary per config, named after its file: results/summary.md for config.yaml, summary-paper.md for
# presets/paper.yaml, so that running another config never overwrites the default study's summary.
SUMMARY_MD = "results/summary{suffix}.md"
SUMMARY_JSON = "results/summary{suffix}.json"
DEFAULT_CONFIG_NAME = "config"
FIGURE_FORMATS = ("png", "svg")  # PNG for the report, SVG for papers
# Entries of results/ that are not studies: a study may not take one of these names.
RESERVED_NAMES = ("comparisons", "summary.md", "summary.json", "summaries", "tensorboard", "report.html",
                  "prediction_validation.csv", "prediction_validation.png", "prediction_validation.svg")
# The prediction of B_crit from short runs (study key `predict`): their traces, outside the grid's traces/
# folder so that no grid rule (cube, analysis) reads them, and the prediction.
PREDICT_TRACE_PATH = "results/{study}/predict/traces/bs{batch_size}/seed{seed}.h5"
PREDICT_CHECKPOINT = "results/{study}/predict/checkpoints/bs{batch_size}.pt"
PREDICT_LOG = "logs/{study}/predict/train_bs{batch_size}.log"
PREDICTION_JSON = "results/{study}/prediction.json"
# Predicted against measured tuned B_crit, one row per study with a prediction and a tuned strategy; one per
# config, named as its summary (results/prediction_validation.csv for config.yaml).
VALIDATION_CSV = "results/prediction_validation{suffix}.csv"
VALIDATION_FIGURE_DIR = "results"


@dataclass(frozen=True)
class Output:
    """A table or figure: its name (the file name, a figure's without extension), the report caption
    (workflow/report/<caption>.rst; None: not in the report) and the label the report shows."""

    name: str
    caption: str | None = None
    label: str | None = None


# Written by the analyze rule for every study.
STUDY_TABLES = (
    Output("speedup.csv", "speedup_table", "speedup"),
    Output("speedup_common.csv", "speedup_common_table", "speedup at the common threshold"),
    Output("critical_batch.json", "critical_batch", "critical batch size"),
    Output("accuracy.csv", "accuracy_table", "accuracy"),
    Output("accuracy.md"),
    Output("linear_error.csv", "linear_error_table", "linear approximation error"),
    Output("noise_scale.csv", "noise_scale_table", "noise scale at eps beside the critical batch"),
    Output("noise_over_training.csv"),
    Output("noise_vs_tuned.csv", "noise_vs_tuned_table", "noise scale beside the tuned critical batch"),
    Output("warmup_check.csv"),  # k(m) against each run's warm-up (analysis.robustness)
    Output("critical_vs_threshold.csv"),  # B_crit across a family of eps (figure critical_vs_threshold)
    Output("analysis_record.json"),  # what the analysis wrote, which the next stages check (store.records)
)
# ... and for a study that runs `tuned`.
TUNED_TABLES = (
    Output("tuned.csv", "tuned_table", "tuned: steps to result"),
    Output("tuned_trials.csv"),
)
# Drawn by the figures rule for every study, in this order; captions are named as the figures.
STUDY_FIGURES = tuple(Output(name, name) for name in (
    "fig1_train_loss_contours",
    "fig5_test_loss_contours",
    "fig2_speedup",
    "fig2_accuracy_linear_error",
    "steps_vs_examples",
    "loss_curves",
    "critical_vs_threshold",
))
# ... for a study that traces the noise scale.
NOISE_FIGURES = (Output("noise_scale", "noise_scale"),)
TUNED_FIGURES = tuple(Output(name, name) for name in ("tuned_steps_to_result", "tuned_eta_star", "tuned_trials"))
THEORY_FIGURE = Output("theory_lsr_breakdown", "theory_lsr_breakdown")
# A study with `branching.enabled` adds these.
BRANCHING_TABLE = Output("local_critical_batch.csv", "local_critical_batch_table", "local critical batch")
BRANCHING_FIGURE = Output("local_critical_batch", "local_critical_batch")
# The prediction's validation (top level): its table and figure.
VALIDATION_TABLE = Output("prediction_validation.csv", "prediction_validation_table", "prediction validation")
VALIDATION_FIGURE = Output("prediction_validation", "prediction_validation")
COMPARISON_TABLE = Output("speedup.csv")
COMPARISON_FIGURE = Output("speedup", "comparison_speedup")


def summary_paths(config_name: str) -> tuple[str, str]:
    """(markdown, JSON) summary of the config named `config_name` (the stem of its file)."""
    suffix = "" if config_name == DEFAULT_CONFIG_NAME else f"-{config_name}"
    return SUMMARY_MD.format(suffix=suffix), SUMMARY_JSON.format(suffix=suffix)


def validation_paths(config_name: str) -> tuple[str, str]:
    """(table, figure stem) of the prediction's validation for the config named `config_name`; the figure's
    files are figure_files(VALIDATION_FIGURE_DIR, stem)."""
    suffix = "" if config_name == DEFAULT_CONFIG_NAME else f"-{config_name}"
    return VALIDATION_CSV.format(suffix=suffix), f"{VALIDATION_FIGURE.name}{suffix}"


def names(outputs) -> list[str]:
    return [output.name for output in outputs]


def study_file(study: str, name: str) -> str:
    return f"{STUDY_DIR.format(study=study)}/{name}"


def figure_files(folder: str, name: str) -> list[str]:
    """A figure's files (one per format) in `folder`."""
    return [f"{folder}/{name}.{ext}" for ext in FIGURE_FORMATS]
