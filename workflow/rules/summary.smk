# The one-page answer: the config's summary with each study's headline numbers (computed by
# batchscale.analysis.headline into its JSON, rendered by batchscale.report.summary), and for least-squares
# studies the theory check (theory.json: λ₁, β, predicted lsr breakdown; a figure of it beside the measurement).


rule theory:
    output:
        THEORY_PATH,
    log:
        "logs/{study}/theory.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        study=study_json,
        code=SUMMARY_SOURCE,
    shell:
        "python -m batchscale theory --study-json {params.study:q} --out {output} 2> {log}"


rule theory_figure:
    input:
        theory=THEORY_PATH,
        common="results/{study}/speedup_common.csv",
    output:
        **figure_outputs((THEORY_FIGURE,)),
    log:
        "logs/{study}/theory_figure.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        name=THEORY_FIGURE.name,
        code=FIGURES_SOURCE,
    shell:
        "python -m batchscale theory-figure --theory {input.theory} --common {input.common} "
        "--out results/{wildcards.study}/figures/{params.name} 2> {log}"


rule summary:
    input:
        summary_inputs() + PREDICTION_SUMMARY_INPUTS,
    output:
        md=report(SUMMARY_MD, caption="../report/summary.rst", category="summary", labels={"table": "summary"}),
        json=SUMMARY_JSON,
    log:
        f"logs/summary-{CONFIG_NAME}.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        studies=json.dumps(STUDIES, sort_keys=True),
        comparisons=json.dumps(COMPARISONS, sort_keys=True),
        validation=PREDICTION_SUMMARY_ARG,
        code=SUMMARY_SOURCE,
    shell:
        "python -m batchscale summary --studies-json {params.studies:q} --results results "
        "--comparisons-json {params.comparisons:q} --out {output.md} --json {output.json} {params.validation} 2> {log}"
