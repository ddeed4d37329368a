# One job per pack (jobs.packs): the runs of a study at one batch size, strategy and seed block (and trial
# block of `tuned`), trained together in one process; its outputs are those runs' traces. Which runs form a
# pack follows from the config alone, so a trace has the same bytes however the grid was grown.
for pack in PACKS:

    rule:
        name:
            pack.name
        input:
            pack.inputs,
        output:
            pack.outputs,
        log:
            pack.log,
        conda:
            "../../envs/batchscale.yaml"
        threads: pack_threads(BATCHSCALE, pack)
        resources:
            mem_mb=pack_mem_mb(BATCHSCALE, pack),
            runtime=pack_runtime_min(BATCHSCALE, pack),
        params:
            runs=pack_runs_json(BATCHSCALE, pack),
            code=train_fingerprint(STUDIES[pack.study]),
            # torch's thread count comes from the config, not from the cores Snakemake grants, so that
            # `--cores` never changes a trace's bits
            threads=pack_threads(BATCHSCALE, pack),
            # outside the declared outputs, so Snakemake never deletes it after a kill
            checkpoint=pack.checkpoint,
        shell:
            "python -m batchscale train --runs-json {params.runs:q} --outputs {output} "
            "--threads {params.threads} --checkpoint {params.checkpoint} --code {params.code} 2> {log}"


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
