# Analysis: every number of a study (thresholds, k, intervals, speedups, regimes, fits, critical batch
# sizes, accuracy, linear approximation error), computed once from its cube and written to the tables of
# spec.manifest.STUDY_TABLES (and TUNED_TABLES), with a record of what was written; the figure and summary
# rules only read them. All logic lives in batchscale.analysis.


rule analyze:
    input:
        cube=CUBE_PATH,
    output:
        **table_outputs(STUDY_TABLES),
    log:
        "logs/{study}/analyze.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        study=study_json,
        code=ANALYSIS_SOURCE,
    shell:
        "python -m batchscale tables --cube {input.cube} --study {wildcards.study} --study-json {params.study:q} "
        "--out results/{wildcards.study} 2> {log}"


# A study with the tuned strategy: the same command also writes the tuned tables (and the tuned entries of
# critical_batch.json); only tuned studies match this rule, and for them it is preferred to the plain one.
use rule analyze as analyze_tuned with:
    output:
        **table_outputs(STUDY_TABLES + TUNED_TABLES),
    wildcard_constraints:
        study="|".join(TUNED_STUDIES) or "NONE",


ruleorder: analyze_tuned > analyze


rule comparison_table:
    input:
        comparison_cubes,
    output:
        f"results/comparisons/{{comparison}}/{COMPARISON_TABLE.name}",
    log:
        "logs/comparisons/{comparison}_table.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        spec=comparison_json,
        studies=comparison_studies_json,
        code=ANALYSIS_SOURCE,
    shell:
        "python -m batchscale compare-tables --spec-json {params.spec:q} --studies-json {params.studies:q} "
        "--output {output} {input} 2> {log}"
