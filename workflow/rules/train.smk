# One job per pack: the runs of a study at one batch size that still need training (see common.smk,
# TRAIN_PACKS), trained together in one process; its outputs are those runs' traces.
for pack in TRAIN_PACKS:

    rule:
        name:
            pack.name
        input:
            pack.inputs,
        output:
            [key.trace_path for key in pack.keys],
        log:
            pack.log,
        conda:
            "../../envs/batchscale.yaml"
        threads: pack_threads(pack)
        resources:
            mem_mb=pack_mem_mb(BATCHSCALE, pack),
            runtime=pack_runtime_min(BATCHSCALE, pack),
        params:
            runs=pack_runs_json(BATCHSCALE, pack),
            engine=ENGINE_SOURCE,
            # outside the declared outputs, so Snakemake never deletes it after a kill
            checkpoint=pack.checkpoint,
        shell:
            "python -m batchscale train --runs-json {params.runs:q} --outputs {output} "
            "--threads {threads} --checkpoint {params.checkpoint} 2> {log}"


# Round 1 of a tuned search with `tuning.refine`: each batch size's best first-round trial, the centre of
# its round-2 range. The DAG stays static: round 2's runs are known from the config, only their rates wait.
rule tuning_refine_ranges:
    input:
        round1_traces,
    output:
        ROUND1_PATH,
    log:
        "logs/{study}/tuning_round1.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        study=study_json,
        code=ANALYSIS_SOURCE,
    shell:
        "python -m batchscale tuning-round1 --study {wildcards.study} --study-json {params.study:q} "
        "--output {output} {input} 2> {log}"
