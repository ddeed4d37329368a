# Analysis: iterations to threshold, speedup, regimes, critical batch size and the accuracy table of a
# study, from its cube. All logic lives in batchscale.analysis; this rule only calls the CLI.


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
    log:
        "logs/{study}/analyze.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        study=study_json,
    shell:
        "python -m batchscale tables --cube {input.cube} --study-json {params.study:q} "
        "--out results/{wildcards.study} 2> {log}"
