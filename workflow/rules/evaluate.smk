# Stage 4b: evaluation against the reference over the historical period, figures for the report.


rule evaluate:
    """Bias/MAE/RMSE per season, fair CRPS, spread-skill, rank histograms, spectra, tails, maps."""
    input:
        **evaluation_inputs(),
    output:
        metrics=report(
            f"{OUT}/evaluation/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="Headline numbers",
        ),
        tables=report(
            directory(f"{OUT}/evaluation/tables"),
            patterns=["{group}_{kind}.csv"],
            caption="../report/tables.rst",
            category="Evaluation tables",
            subcategory="{group}",
            labels={"group": "{group}", "table": "{kind}"},
        ),
        figures=report(
            directory(f"{OUT}/evaluation/figures"),
            patterns=["{variable}_{kind}.png"],
            caption="../report/figures.rst",
            category="Evaluation figures",
            subcategory="{variable}",
            labels={"variable": "{variable}", "figure": "{kind}"},
        ),
    params:
        config=cfg_slice("evaluation", "indices", "reference.name"),
    log:
        f"{OUT}/logs/evaluate.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate.tsv"
    resources:
        mem_mb=scaled_mem("evaluate"),
        runtime=scaled_runtime("evaluate"),
    conda:
        "../../envs/evaluate.yaml"
    script:
        "../scripts/evaluate.py"

