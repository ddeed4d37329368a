# batchscale: how does SGD training speed scale with the batch size?
#   snakemake --cores 2                      the default study (config.yaml), on the CPU
#   snakemake --cores 2 --configfile presets/paper-smoke.yaml
#   snakemake --profile profiles/slurm --configfile presets/paper.yaml   on a SLURM GPU cluster
from snakemake.utils import min_version

min_version("9.0")


# The default studies apply only when no config is named: Snakemake deep-merges a --configfile into a
# `configfile:`, so declaring it unconditionally would leak the default studies and keys into a user's config.
# `--config file=PATH` names a config that only batchscale's code-free YAML reader opens (common.smk).
if not workflow.overwrite_configfiles and "file" not in config:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/cube.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/branching.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/summary.smk"


# Progress on the console while jobs run, and the summary's headline at the end (jobs.progress).
PROGRESS = ProgressMonitor(
    [pack_work(BATCHSCALE, pack) for pack in PACKS]
    + [pack_work(BATCHSCALE, pack, predict_epochs(BATCHSCALE["studies"][pack.study])) for pack in PREDICT_PACKS],
    BATCHSCALE["progress_seconds"],
)


onstart:
    PROGRESS.start()


onsuccess:
    PROGRESS.stop()
    print(summary_headline(SUMMARY_MD), file=sys.stderr)


onerror:
    PROGRESS.stop()


rule all:
    default_target: True
    input:
        all_outputs() + predict_outputs(),
