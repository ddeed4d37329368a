# Local critical batch by branching from checkpoints (Merrill et al. 2025), for the studies whose
# `branching.enabled` is true: base run with checkpoints -> every branch k of each checkpoint (one job per
# checkpoint) -> local_critical_batch.csv -> its figure. The checkpoint count is a key, so the DAG is static.
# Training is batchscale.engine.branch, the table batchscale.analysis.branching, the figure batchscale.report;
# the paths are spec.manifest's, the input functions common.smk's (branching_*). The table and the figure are
# in the report (captions workflow/report/local_critical_batch_table.rst and local_critical_batch.rst).

rule branch_base:
    output:
        BRANCHING_BASE,
    log:
        "logs/{study}/branching/base.log",
    conda:
        "../../envs/batchscale.yaml"
    params:
        run=branching_base_run_json,
        checkpoints=lambda wildcards: STUDIES[wildcards.study]["branching"]["checkpoints"],
        code=BRANCH_SOURCE,
    shell:
        "python -m batchscale branch-base --run-json {params.run:q} --checkpoints {params.checkpoints} "
        "--output {output} 2> {log}"


rule branch:
    input:
        BRANCHING_BASE,
    output:
        BRANCHING_CHECKPOINT,
    wildcard_constraints:
        index=r"\d+",
    log:
        "logs/{study}/branching/checkpoint{index}.log",
    conda:
        "../../envs/batchscale.yaml"
    params:
        # k, delta_examples, lr_rule, evaluations (the tolerance and smoothing too: one JSON, small)
        branching=branching_json,
        code=BRANCH_SOURCE,
    shell:
        "python -m batchscale branch --base {input} --index {wildcards.index} "
        "--branching-json {params.branching:q} --output {output} 2> {log}"


rule local_critical_batch:
    input:
        branching_files,
    output:
        reported(f"results/{{study}}/{BRANCHING_TABLE.name}", BRANCHING_TABLE, subcategory="tables",
                 study="{study}", table=BRANCHING_TABLE.label),
    log:
        "logs/{study}/branching/table.log",
    conda:
        "../../envs/batchscale.yaml"
    params:
        branching=branching_json,
        code=ANALYSIS_SOURCE,
    shell:
        "python -m batchscale branch-table --branching-json {params.branching:q} --output {output} "
        "{input} 2> {log}"


rule local_critical_batch_figure:
    input:
        f"results/{{study}}/{BRANCHING_TABLE.name}",
    output:
        **figure_outputs((BRANCHING_FIGURE,)),
    log:
        "logs/{study}/branching/figure.log",
    conda:
        "../../envs/batchscale.yaml"
    params:
        code=FIGURES_SOURCE,
    shell:
        "python -m batchscale branch-figure --table {input} --study {wildcards.study} "
        "--out results/{wildcards.study}/figures 2> {log}"
