# Figures: one rule per study (the six figures of STUDY_FIGURES, PNG for the report + SVG) and one per
# named comparison of studies (overlaid speedup curves, paper Figs. 3 and 4). They draw the numbers the
# analysis rules wrote (their inputs) and compute none. All drawing lives in batchscale.report.figures.


rule figures:
    input:
        cube="results/{study}/cube.nc",
        tables=study_tables,
    output:
        png=[study_figure_png(name) for name in STUDY_FIGURES],
        svg=[f"results/{{study}}/figures/{name}.svg" for name in STUDY_FIGURES],
    log:
        "logs/{study}/figures.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        study=study_json,
        code=FIGURES_SOURCE,
    shell:
        "python -m batchscale figures --cube {input.cube} --tables results/{wildcards.study} "
        "--study-json {params.study:q} --out results/{wildcards.study}/figures 2> {log}"


# The tuned search's figures (TUNED_FIGURES), for the studies that run it, drawn from its tables.
rule tuned_figures:
    input:
        tables=study_tables,
        tuned=[f"results/{{study}}/{name}" for name in TUNED_TABLES],
    output:
        png=[study_figure_png(name) for name in TUNED_FIGURES],
        svg=[f"results/{{study}}/figures/{name}.svg" for name in TUNED_FIGURES],
    wildcard_constraints:
        study="|".join(TUNED_STUDIES) or "NONE",
    log:
        "logs/{study}/tuned_figures.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        study=study_json,
        code=FIGURES_SOURCE,
    shell:
        "python -m batchscale tuned-figures --tables results/{wildcards.study} "
        "--study-json {params.study:q} --out results/{wildcards.study}/figures 2> {log}"


rule compare:
    input:
        table="results/comparisons/{comparison}/speedup.csv",
    output:
        png=report(
            "results/comparisons/{comparison}/speedup.png",
            caption="../report/comparison_speedup.rst",
            category="comparisons",
            subcategory="{comparison}",
            labels={"comparison": "{comparison}", "figure": "speedup"},
        ),
        svg="results/comparisons/{comparison}/speedup.svg",
    log:
        "logs/comparisons/{comparison}.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        spec=comparison_json,
        code=FIGURES_SOURCE,
    shell:
        "python -m batchscale compare --name {wildcards.comparison} --spec-json {params.spec:q} "
        "--table {input.table} --out results/comparisons/{wildcards.comparison} 2> {log}"
