# Analysis: every number of a study (thresholds, k, intervals, speedups, regimes, fits, critical batch
# sizes, accuracy, linear approximation error), computed once from its cube and written to the files of
# STUDY_TABLES; the figure rules only draw them. All logic lives in batchscale.analysis.


rule analyze:
    input:
        cube="results/{study}/cube.nc",
    output:
        speedup=report(
            "results/{study}/speedup.csv",
            caption="../report/speedup_table.rst",
            category="{study}",
            subcategory="tables",
            labels={"study": "{study}", "table": "speedup"},
        ),
        critical=report(
            "results/{study}/critical_batch.json",
            caption="../report/critical_batch.rst",
            category="{study}",
            subcategory="tables",
            labels={"study": "{study}", "table": "critical batch size"},
        ),
        accuracy=report(
            "results/{study}/accuracy.csv",
            caption="../report/accuracy_table.rst",
            category="{study}",
            subcategory="tables",
            labels={"study": "{study}", "table": "accuracy"},
        ),
        accuracy_md="results/{study}/accuracy.md",
        speedup_common=report(
            "results/{study}/speedup_common.csv",
            caption="../report/speedup_common_table.rst",
            category="{study}",
            subcategory="tables",
            labels={"study": "{study}", "table": "speedup at the common threshold"},
        ),
        linear_error=report(
            "results/{study}/linear_error.csv",
            caption="../report/linear_error_table.rst",
            category="{study}",
            subcategory="tables",
            labels={"study": "{study}", "table": "linear approximation error"},
        ),
        noise_scale=report(
            "results/{study}/noise_scale.csv",
            caption="../report/noise_scale_table.rst",
            category="{study}",
            subcategory="tables",
            labels={"study": "{study}", "table": "noise scale at eps beside the critical batch"},
        ),
        noise_over_training="results/{study}/noise_over_training.csv",
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
        "python -m batchscale tables --cube {input.cube} --study-json {params.study:q} "
        "--out results/{wildcards.study} 2> {log}"


# A study with the tuned strategy: the same command also writes tuned.csv and tuned_trials.csv (and the
# tuned entries of critical_batch.json), declared here; only tuned studies match this rule, and for them it
# is preferred to the plain one.
use rule analyze as analyze_tuned with:
    output:
        **rules.analyze.output,
        tuned=report(
            "results/{study}/tuned.csv",
            caption="../report/tuned_table.rst",
            category="{study}",
            subcategory="tables",
            labels={"study": "{study}", "table": "tuned: steps to result"},
        ),
        tuned_trials="results/{study}/tuned_trials.csv",
    wildcard_constraints:
        study="|".join(TUNED_STUDIES) or "NONE",


ruleorder: analyze_tuned > analyze


rule comparison_table:
    input:
        comparison_cubes,
    output:
        "results/comparisons/{comparison}/speedup.csv",
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
