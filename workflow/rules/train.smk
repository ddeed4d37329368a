# One job per pack: the runs of a study at one batch size that still need training (see common.smk,
# TRAIN_PACKS), trained together in one process; its outputs are those runs' traces.
for pack in TRAIN_PACKS:

    rule:
        name:
            pack.name
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
