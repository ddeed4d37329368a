# Helpers shared by the rules: config validation (JSON schema + semantic checks) and the run grid.
import json
import os
import sys
from pathlib import Path

# A study's own `package.module:callable` is found from the working directory, as `python -m batchscale` does.
sys.path.insert(0, os.getcwd())

from batchscale.errors import ConfigError
from batchscale.spec.manifest import (
    BRANCHING_BASE,
    BRANCHING_CHECKPOINT,
    BRANCHING_FIGURE,
    BRANCHING_TABLE,
    COMPARISON_FIGURE,
    COMPARISON_TABLE,
    CUBE_PATH,
    FIGURE_FORMATS,
    NOISE_FIGURES,
    ROUND1_PATH,
    STUDY_FIGURES,
    STUDY_TABLES,
    THEORY_FIGURE,
    THEORY_PATH,
    TUNED_FIGURES,
    TUNED_TABLES,
    names,
    summary_paths,
)
from batchscale.spec.reading import read_yaml
from batchscale.spec.runs import iter_runs, refinement_trials, run_config, RunKey, study_trials
from batchscale.spec.strategies import STRATEGIES, TUNED
from batchscale.spec.studies import has_theory
from batchscale.jobs.config_cache import load_config_cached
from batchscale.jobs.fingerprints import stage_fingerprint, train_fingerprint
from batchscale.jobs.packs import all_packs, pack_mem_mb, pack_runs_json, pack_runtime_min, pack_threads
from batchscale.jobs.progress import ProgressMonitor, pack_work, summary_headline

# Where the config comes from: `--config file=PATH` (read only by batchscale's strict, code-free YAML reader:
# the safe way to run a config from someone else), a --configfile (which Snakemake itself reads first), or
# config.yaml. Its name tells results of different configs apart (the summary).
CONFIG_FILES = [config["file"]] if "file" in config else (workflow.overwrite_configfiles or ["config.yaml"])
CONFIG_NAME = Path(str(CONFIG_FILES[0])).stem
SUMMARY_MD, SUMMARY_JSON = summary_paths(CONFIG_NAME)
try:
    # Snakemake's YAML reader keeps the last of two equal keys silently, and evaluates YTE templates: read
    # each config file again, strictly, refusing both.
    loaded = [read_yaml(path) for path in CONFIG_FILES]
    # Validates against workflow/schemas/config.schema.yaml, fills defaults, resolves every study (once per
    # config and code: later parses read the result, jobs.config_cache).
    BATCHSCALE = load_config_cached(loaded[0] if "file" in config else config)
except ConfigError as err:
    # One line naming the key, before any job starts; no traceback.
    print(f"batchscale: error: {err}", file=sys.stderr)
    sys.exit(1)

STUDIES = BATCHSCALE["studies"]
COMPARISONS = BATCHSCALE.get("comparisons", {})
RUNS = list(iter_runs(BATCHSCALE))
# Every pack of the grid, a pure function of the config: each is one train job whether or not its traces
# exist, so Snakemake's own triggers (params, input, code) and --forcerun/--forceall see training.
PACKS = all_packs(BATCHSCALE)
# Hashes of the code each stage runs (jobs.fingerprints): a param of its rules, so an edit reruns exactly
# the jobs that run that code (Snakemake's code trigger sees only the text of a shell: command).
CUBE_SOURCE = stage_fingerprint("cube")
ANALYSIS_SOURCE = stage_fingerprint("analysis")
FIGURES_SOURCE = stage_fingerprint("figures")
SUMMARY_SOURCE = stage_fingerprint("summary")
BRANCH_SOURCE = stage_fingerprint("branch")


wildcard_constraints:
    study="|".join(sorted(STUDIES)) or "NONE",
    strategy="|".join(STRATEGIES),
    batch_size=r"\d+",
    seed=r"\d+",
    comparison="|".join(sorted(COMPARISONS)) or "NONE",


# Which studies get which extra outputs (the lists of files themselves are batchscale.spec.manifest's).
TUNED_STUDIES = [name for name, study in STUDIES.items() if TUNED in study["strategies"]]
NOISE_STUDIES = [name for name, study in STUDIES.items() if study["noise_scale"]["enabled"]]
BRANCHING_STUDIES = [name for name, study in STUDIES.items() if study["branching"]["enabled"]]
THEORY_STUDIES = [name for name, study in STUDIES.items() if has_theory(study)]
NOISE_FIGURE_NAMES = " ".join(names(NOISE_FIGURES))


def study_file(study, name):
    return f"results/{study}/{name}"


def figure_files(study, outputs):
    return [f"results/{study}/figures/{output.name}.{ext}" for output in outputs for ext in FIGURE_FORMATS]


def study_traces(wildcards):
    return [key.trace_path for key in RUNS if key.study == wildcards.study]


def round1_traces(wildcards):
    """The first-round trial traces of a tuned study (trials 0 .. K-1), which round 2 is centred on."""
    first = len(study_trials(STUDIES[wildcards.study]))
    return [key.trace_path for key in RUNS
            if key.study == wildcards.study and key.strategy == TUNED and key.trial < first]


def study_json(wildcards):
    return json.dumps(STUDIES[wildcards.study], sort_keys=True)


def comparison_cubes(wildcards):
    return [CUBE_PATH.format(study=study) for study in COMPARISONS[wildcards.comparison]["studies"]]


def comparison_json(wildcards):
    return json.dumps(COMPARISONS[wildcards.comparison], sort_keys=True)


def comparison_studies_json(wildcards):
    chosen = COMPARISONS[wildcards.comparison]["studies"]
    return json.dumps({name: STUDIES[name] for name in chosen}, sort_keys=True)


def all_outputs():
    # every trace is a target, so a deleted one retrains its pack (an intermediate file that is missing
    # would not: Snakemake treats it like a temp() file once what depends on it exists)
    outputs = [key.trace_path for key in RUNS]
    for study in STUDIES:
        outputs.append(CUBE_PATH.format(study=study))
        outputs += [study_file(study, name) for name in names(STUDY_TABLES)]
        outputs += figure_files(study, STUDY_FIGURES)
    for study in TUNED_STUDIES:
        outputs += [study_file(study, name) for name in names(TUNED_TABLES)] + figure_files(study, TUNED_FIGURES)
        if refinement_trials(STUDIES[study]):
            # a target of its own, so a change of the study's threshold or metrics rewrites it (params
            # trigger), and round 2's packs, which take it as input, retrain
            outputs.append(ROUND1_PATH.format(study=study))
    for study in NOISE_STUDIES:
        outputs += figure_files(study, NOISE_FIGURES)
    for study in BRANCHING_STUDIES:
        outputs += [study_file(study, BRANCHING_TABLE.name)] + figure_files(study, (BRANCHING_FIGURE,))
    for study in THEORY_STUDIES:
        outputs += [THEORY_PATH.format(study=study)] + figure_files(study, (THEORY_FIGURE,))
    for comparison in COMPARISONS:
        folder = f"results/comparisons/{comparison}"
        outputs += [f"{folder}/{COMPARISON_TABLE.name}"] + [f"{folder}/{COMPARISON_FIGURE.name}.{ext}"
                                                            for ext in FIGURE_FORMATS]
    return outputs + [SUMMARY_MD, SUMMARY_JSON]


def summary_inputs():
    """What the summary is read from: every study's analysis tables (the local critical batch where it branches),
    the theory files and each comparison's."""
    inputs = []
    for study in STUDIES:
        inputs += [study_file(study, name) for name in ("critical_batch.json", "speedup.csv", "speedup_common.csv",
                                                         "warmup_check.csv", "analysis_record.json")]
        if study in NOISE_STUDIES:
            inputs.append(study_file(study, "noise_scale.csv"))  # its B_simple-to-B_crit line
        if study in BRANCHING_STUDIES:
            inputs.append(study_file(study, BRANCHING_TABLE.name))  # its local critical batch line
    inputs += [THEORY_PATH.format(study=study) for study in THEORY_STUDIES]
    inputs += [f"results/comparisons/{name}/{COMPARISON_TABLE.name}" for name in COMPARISONS]
    return inputs


def study_tables(wildcards):
    """The analysis files a study's figures are drawn from (every table of STUDY_TABLES, and the theory's
    prediction for a study it describes)."""
    files = [study_file(wildcards.study, name) for name in names(STUDY_TABLES)]
    return files + ([THEORY_PATH.format(study=wildcards.study)] if wildcards.study in THEORY_STUDIES else [])


def reported(path, output, category="{study}", subcategory="figures", **labels):
    """`path`, marked for `snakemake --report` with its caption (workflow/report/<caption>.rst)."""
    return report(path, caption=f"../report/{output.caption}.rst", category=category, subcategory=subcategory,
                  labels=labels or {"study": "{study}", "figure": output.name})


def figure_outputs(outputs):
    """The png (in the report) and svg files of figures, as a rule's named outputs."""
    return {"png": [reported(f"results/{{study}}/figures/{o.name}.png", o) for o in outputs],
            "svg": [f"results/{{study}}/figures/{o.name}.svg" for o in outputs]}


def table_outputs(outputs):
    """A study's tables as a rule's named outputs (those with a caption go into the report)."""
    named = {}
    for output in outputs:
        path = f"results/{{study}}/{output.name}"
        key = output.name.replace(".", "_")
        named[key] = path if output.caption is None else reported(
            path, output, subcategory="tables", study="{study}", table=output.label)
    return named


def branching_base_run_json(wildcards):
    study = STUDIES[wildcards.study]
    cfg = study["branching"]
    key = RunKey(wildcards.study, cfg["strategy"], int(cfg["batch_size"] or study["base_batch"]), int(cfg["seed"]))
    return json.dumps(run_config(BATCHSCALE, key), sort_keys=True)


def branching_json(wildcards):
    return json.dumps(STUDIES[wildcards.study]["branching"], sort_keys=True)


def branching_files(wildcards):
    count = STUDIES[wildcards.study]["branching"]["checkpoints"]
    return [BRANCHING_CHECKPOINT.format(study=wildcards.study, index=i) for i in range(count)]


# The prediction of B_crit from short runs (workflow/rules/predict.smk).
from batchscale.jobs.predict_packs import predict_packs, predict_runs_json, predict_threads
from batchscale.spec.manifest import PREDICTION_JSON, VALIDATION_FIGURE, VALIDATION_FIGURE_DIR, validation_paths
from batchscale.spec.predict import predict_epochs, predict_trace_paths

PREDICT_PACKS = predict_packs(BATCHSCALE)
PREDICT_STUDIES = [pack.study for pack in PREDICT_PACKS]
VALIDATED_STUDIES = [name for name in PREDICT_STUDIES if name in TUNED_STUDIES]
VALIDATION_TABLE_PATH, VALIDATION_FIGURE_STEM = validation_paths(CONFIG_NAME)
PREDICT_SOURCE = stage_fingerprint("predict")


def predict_outputs():
    """prediction.json of every study that predicts; the validation table and figure when one runs tuned."""
    outputs = [PREDICTION_JSON.format(study=name) for name in PREDICT_STUDIES]
    if VALIDATED_STUDIES:
        outputs += [VALIDATION_TABLE_PATH] + [f"{VALIDATION_FIGURE_DIR}/{VALIDATION_FIGURE_STEM}.{ext}"
                                              for ext in FIGURE_FORMATS]
    return outputs


# What the summary adds: the validation table leads the page.
PREDICTION_SUMMARY_INPUTS = [VALIDATION_TABLE_PATH] if VALIDATED_STUDIES else []
PREDICTION_SUMMARY_ARG = f"--validation {VALIDATION_TABLE_PATH}" if VALIDATED_STUDIES else ""


def predict_inputs(wildcards):
    """The prediction runs' traces and, when the target loss is the grid's eps (predict.target_loss null), the
    study's critical_batch.json and the grid's traces (their CPU seconds: the cost). With a target_loss of its
    own the prediction waits for nothing but its runs (its cost is then not set against the grid)."""
    study = STUDIES[wildcards.study]
    inputs = {"traces": predict_trace_paths(wildcards.study, study), "grid": []}
    if study["predict"]["target_loss"] is None:
        inputs["critical"] = study_file(wildcards.study, "critical_batch.json")
        inputs["grid"] = study_traces(wildcards)
    return inputs


def predict_critical_arg(wildcards):
    study = STUDIES[wildcards.study]
    return "" if study["predict"]["target_loss"] is not None else \
        f"--critical {study_file(wildcards.study, 'critical_batch.json')}"
