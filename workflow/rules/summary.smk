# The one-page answer: results/summary.md with each study's headline numbers, and for least-squares studies
# the theory check (theory.json: λ₁, β, predicted lsr breakdown; a figure of it beside the measurement).
# The numbers come from batchscale.analysis (theory_check, headline); batchscale.report writes the page and the figure.


rule theory:
    output:
        "results/{study}/theory.json",
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
        "python -m batchscale.analysis.theory_check theory --study-json {params.study:q} --out {output} 2> {log}"


rule theory_figure:
    input:
        theory="results/{study}/theory.json",
        common="results/{study}/speedup_common.csv",
    output:
        png=report(
            "results/{study}/figures/theory_lsr_breakdown.png",
            caption="../report/theory_lsr_breakdown.rst",
            category="{study}",
            subcategory="figures",
            labels={"study": "{study}", "figure": "theory_lsr_breakdown"},
        ),
        svg="results/{study}/figures/theory_lsr_breakdown.svg",
    log:
        "logs/{study}/theory_figure.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        code=FIGURES_SOURCE,
    shell:
        "python -m batchscale.report.theory_figure --theory {input.theory} --common {input.common} "
        "--out results/{wildcards.study}/figures/theory_lsr_breakdown 2> {log}"


rule summary:
    input:
        summary_inputs(),
    output:
        md=report(
            SUMMARY_MD,
            caption="../report/summary.rst",
            category="summary",
            labels={"table": "summary"},
        ),
        json=SUMMARY_JSON,
    log:
        "logs/summary.log",
    conda:
        "../../envs/batchscale.yaml"
    resources:
        mem_mb=1000,
    params:
        studies=json.dumps(STUDIES, sort_keys=True),
        comparisons=json.dumps(COMPARISONS, sort_keys=True),
        code=SUMMARY_SOURCE,
    shell:
        "python -m batchscale.report.summary write --studies-json {params.studies:q} --results results "
        "--comparisons-json {params.comparisons:q} --out {output.md} --json {output.json} 2> {log}"
