# Figures: the study figures of spec.manifest (STUDY_FIGURES for every study, TUNED_FIGURES and NOISE_FIGURES
# where a study runs them; PNG for the report + SVG) and one per named comparison (paper Figs. 3 and 4). They
# draw the numbers the analysis rules wrote (their inputs) and compute none: batchscale.report.figures.


rule figures:
    input:
        cube=CUBE_PATH,
        tables=study_tables,
    output:
        **figure_outputs(STUDY_FIGURES),
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
        "python -m batchscale figures --cube {input.cube} --study {wildcards.study} --tables results/{wildcards.study} "
        "--study-json {params.study:q} --out results/{wildcards.study}/figures 2> {log}"


# The noise scale over training, for the studies that trace it.
rule noise_figures:
    input:
        cube=CUBE_PATH,
        tables=study_tables,
    output:
        **figure_outputs(NOISE_FIGURES),
    wildcard_constraints:
        study="|".join(NOISE_STUDIES) or "NONE",
    log:
        "logs/{study}/noise_figures.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        study=study_json,
        names=NOISE_FIGURE_NAMES,
        code=FIGURES_SOURCE,
    shell:
        "python -m batchscale figures --names {params.names} --cube {input.cube} --study {wildcards.study} "
        "--tables results/{wildcards.study} --study-json {params.study:q} --out results/{wildcards.study}/figures "
        "2> {log}"


# The tuned search's figures, for the studies that run it, drawn from its tables.
rule tuned_figures:
    input:
        tables=study_tables,
        tuned=[f"results/{{study}}/{name}" for name in names(TUNED_TABLES)],
    output:
        **figure_outputs(TUNED_FIGURES),
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
        table=f"results/comparisons/{{comparison}}/{COMPARISON_TABLE.name}",
    output:
        png=reported(f"results/comparisons/{{comparison}}/{COMPARISON_FIGURE.name}.png", COMPARISON_FIGURE,
                     category="comparisons", subcategory="{comparison}", comparison="{comparison}",
                     figure=COMPARISON_FIGURE.name),
        svg=f"results/comparisons/{{comparison}}/{COMPARISON_FIGURE.name}.svg",
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
