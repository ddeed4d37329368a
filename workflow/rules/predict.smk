# The critical batch predicted from short runs (study key `predict`), and the prediction validated against the
# grid. The prediction runs are one pack job per study (jobs.predict_packs), ordinary training runs with the
# noise scale traced, under results/{study}/predict/traces/ (the grid's cube never reads them); rule predict
# reads B_simple from them (batchscale.analysis.prediction); rule prediction_validation sets every study that
# predicts and runs tuned against its measured tuned B_crit; rule prediction_figure draws that table. Their
# helpers are in common.smk.
for pack in PREDICT_PACKS:

    rule:
        name:
            pack.name
        output:
            pack.outputs,
        log:
            pack.log,
        conda:
            "../../envs/batchscale.yaml"
        threads: predict_threads(BATCHSCALE, pack)
        resources:
            mem_mb=pack_mem_mb(BATCHSCALE, pack),
            runtime=pack_runtime_min(BATCHSCALE, pack),
        params:
            runs=predict_runs_json(BATCHSCALE, pack),
            code=train_fingerprint(STUDIES[pack.study]),
            threads=predict_threads(BATCHSCALE, pack),
            checkpoint=pack.checkpoint,
        shell:
            "python -m batchscale train --runs-json {params.runs:q} --outputs {output} "
            "--threads {params.threads} --checkpoint {params.checkpoint} --code {params.code} 2> {log}"


rule predict:
    input:
        unpack(predict_inputs),
    output:
        PREDICTION_JSON,
    wildcard_constraints:
        study="|".join(PREDICT_STUDIES) or "NONE",
    log:
        "logs/{study}/predict.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        study=study_json,
        critical=predict_critical_arg,
        code=PREDICT_SOURCE,
    shell:
        "python -m batchscale predict --study {wildcards.study} --study-json {params.study:q} "
        "--traces {input.traces} --grid-traces {input.grid} {params.critical} --out {output} 2> {log}"


rule prediction_validation:
    input:
        predictions=[PREDICTION_JSON.format(study=name) for name in VALIDATED_STUDIES],
        criticals=[study_file(name, "critical_batch.json") for name in VALIDATED_STUDIES],
    output:
        report(VALIDATION_TABLE_PATH, caption="../report/prediction_validation_table.rst", category="prediction",
               labels={"table": "prediction validation"}),
    log:
        f"logs/prediction_validation-{CONFIG_NAME}.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        studies=json.dumps({name: STUDIES[name] for name in VALIDATED_STUDIES}, sort_keys=True),
        code=PREDICT_SOURCE,
    shell:
        "python -m batchscale prediction-validation --studies-json {params.studies:q} "
        "--predictions {input.predictions} --criticals {input.criticals} --out {output} 2> {log}"


rule prediction_figure:
    input:
        VALIDATION_TABLE_PATH,
    output:
        png=report(f"{VALIDATION_FIGURE_DIR}/{VALIDATION_FIGURE_STEM}.png", caption="../report/prediction_validation.rst",
                   category="prediction", labels={"figure": "prediction validation"}),
        svg=f"{VALIDATION_FIGURE_DIR}/{VALIDATION_FIGURE_STEM}.svg",
    log:
        f"logs/prediction_figure-{CONFIG_NAME}.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        name=VALIDATION_FIGURE_STEM,
        folder=lambda wildcards, output: os.path.dirname(output.png),
        code=FIGURES_SOURCE,
    shell:
        "python -m batchscale prediction-figure --table {input} --out-dir {params.folder} --name {params.name} 2> {log}"
