# Helpers shared by the rules: config validation (JSON schema + semantic checks) and the run grid.
import json
import os
import sys
from pathlib import Path

# A study's own `package.module:callable` is found from the working directory, as `python -m batchscale` does.
sys.path.insert(0, os.getcwd())

from batchscale.errors import ConfigError
from batchscale.spec.manifest import ROUND1_PATH, summary_paths
from batchscale.spec.reading import read_yaml
from batchscale.spec.runs import iter_runs, refinement_trials, run_config, RunKey, study_trials
from batchscale.spec.strategies import TUNED
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
    strategy="blr|lsr|srsr|longer|tuned|adam_srsr",
    batch_size=r"\d+",
    seed=r"\d+",
    comparison="|".join(sorted(COMPARISONS)) or "NONE",


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
    return [
        f"results/{study}/cube.nc"
        for study in COMPARISONS[wildcards.comparison]["studies"]
    ]


def comparison_json(wildcards):
    return json.dumps(COMPARISONS[wildcards.comparison], sort_keys=True)


def comparison_studies_json(wildcards):
    names = COMPARISONS[wildcards.comparison]["studies"]
    return json.dumps({name: STUDIES[name] for name in names}, sort_keys=True)


STUDY_TABLES = [
    "speedup.csv",
    "speedup_common.csv",
    "critical_batch.json",
    "accuracy.csv",
    "accuracy.md",
    "linear_error.csv",
    "noise_scale.csv",
    "noise_over_training.csv",
]
# a study with `branching.enabled` adds these (workflow/rules/branching.smk)
BRANCHING_OUTPUTS = ["local_critical_batch.csv", "figures/local_critical_batch.png",
                     "figures/local_critical_batch.svg"]
STUDY_FIGURES = [
    "fig1_train_loss_contours",
    "fig5_test_loss_contours",
    "fig2_speedup",
    "fig2_accuracy_linear_error",
    "steps_vs_examples",
    "loss_curves",
    "noise_scale",
]


# Studies that run the tuned search get its tables (written by the analyze rule, rule analyze_tuned) and
# figures (rule tuned_figures) besides the ones above.
TUNED_STUDIES = [name for name, study in STUDIES.items() if TUNED in study["strategies"]]
TUNED_TABLES = ["tuned.csv", "tuned_trials.csv"]
TUNED_FIGURES = ["tuned_steps_to_result", "tuned_eta_star", "tuned_trials"]


def all_outputs():
    # every trace is a target, so a deleted one retrains its pack (an intermediate file that is missing
    # would not: Snakemake treats it like a temp() file once what depends on it exists)
    outputs = [key.trace_path for key in RUNS]
    for study in TUNED_STUDIES:
        outputs += [f"results/{study}/{name}" for name in TUNED_TABLES]
        if refinement_trials(STUDIES[study]):
            # a target of its own, so a change of the study's threshold or metrics rewrites it (params
            # trigger), and round 2's packs, which take it as input, retrain
            outputs.append(ROUND1_PATH.format(study=study))
        outputs += [f"results/{study}/figures/{name}.{ext}" for name in TUNED_FIGURES for ext in ("png", "svg")]
    for study in STUDIES:
        outputs.append(f"results/{study}/cube.nc")
        outputs += [f"results/{study}/{name}" for name in STUDY_TABLES]
        outputs += [
            f"results/{study}/figures/{name}.{ext}"
            for name in STUDY_FIGURES
            for ext in ("png", "svg")
        ]
        if STUDIES[study]["branching"]["enabled"]:
            outputs += [f"results/{study}/{name}" for name in BRANCHING_OUTPUTS]
    for comparison in COMPARISONS:
        outputs += [
            f"results/comparisons/{comparison}/speedup.{ext}" for ext in ("csv", "png", "svg")
        ]
    outputs += summary_outputs()
    return outputs


def theory_studies():
    """Studies the least-squares theory describes (a linear model on least_squares data)."""
    from batchscale.analysis.least_squares import has_theory

    return [name for name, study in STUDIES.items() if has_theory(study)]


def summary_outputs():
    """The config's summary, and each least-squares study's theory.json and theory figure (rules in summary.smk)."""
    outputs = [SUMMARY_MD, SUMMARY_JSON]
    for study in theory_studies():
        outputs.append(f"results/{study}/theory.json")
        outputs += [f"results/{study}/figures/theory_lsr_breakdown.{ext}" for ext in ("png", "svg")]
    return outputs


def summary_inputs():
    """What the summary is read from: every study's analysis tables, the theory files and each
    comparison's table."""
    inputs = []
    for study in STUDIES:
        inputs += [f"results/{study}/{name}" for name in ("critical_batch.json", "speedup.csv", "speedup_common.csv")]
        if STUDIES[study]["noise_scale"]["enabled"]:
            inputs.append(f"results/{study}/noise_scale.csv")  # its B_simple-to-B_crit line
    inputs += [f"results/{study}/theory.json" for study in theory_studies()]
    inputs += [f"results/comparisons/{name}/speedup.csv" for name in COMPARISONS]
    return inputs


def study_tables(wildcards):
    """The analysis files a study's figures are drawn from (every table of STUDY_TABLES)."""
    return [f"results/{wildcards.study}/{name}" for name in STUDY_TABLES]


def study_figure_png(name):
    """A study figure's PNG, marked for `snakemake --report` with its caption (workflow/report/<name>.rst)."""
    return report(
        f"results/{{study}}/figures/{name}.png",
        caption=f"../report/{name}.rst",
        category="{study}",
        subcategory="figures",
        labels={"study": "{study}", "figure": name},
    )


# Branching from checkpoints (branching.smk): the studies that branch, file templates, input functions.
BRANCHING_STUDIES = [name for name, study in STUDIES.items() if study["branching"]["enabled"]]
BRANCHING_BASE = "results/{study}/branching/base.pt"
BRANCHING_BRANCHES = "results/{study}/branching/checkpoint{index}.json"


def branching_base_run_json(wildcards):
    study = STUDIES[wildcards.study]
    cfg = study["branching"]
    key = RunKey(wildcards.study, cfg["strategy"], int(cfg["batch_size"] or study["base_batch"]), int(cfg["seed"]))
    return json.dumps(run_config(BATCHSCALE, key), sort_keys=True)


def branching_json(wildcards):
    return json.dumps(STUDIES[wildcards.study]["branching"], sort_keys=True)


def branching_files(wildcards):
    count = STUDIES[wildcards.study]["branching"]["checkpoints"]
    return [BRANCHING_BRANCHES.format(study=wildcards.study, index=i) for i in range(count)]
