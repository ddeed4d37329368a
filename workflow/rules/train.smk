rule train:
    output:
        "results/{study}/traces/{strategy}/bs{batch_size}/seed{seed}.h5",
    log:
        "logs/{study}/train/{strategy}/bs{batch_size}/seed{seed}.log",
    conda:
        "../../envs/batchscale.yaml"
    threads: train_threads
    resources:
        mem_mb=2000,
    params:
        run=run_json,
        engine=ENGINE_SOURCE,
        # outside the declared outputs, so Snakemake never deletes it after a kill
        checkpoint="results/{study}/checkpoints/{strategy}/bs{batch_size}/seed{seed}.pt",
    shell:
        "python -m batchscale train --run-json {params.run:q} --output {output} "
        "--threads {threads} --checkpoint {params.checkpoint} 2> {log}"
