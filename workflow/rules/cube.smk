rule cube:
    input:
        study_traces,
    output:
        CUBE_PATH,
    log:
        "logs/{study}/cube.log",
    conda:
        "../../envs/batchscale.yaml"
    params:
        study=study_json,
        code=CUBE_SOURCE,
    shell:
        "python -m batchscale cube --study {wildcards.study} --study-json {params.study:q} "
        "--output {output} {input} 2> {log}"
