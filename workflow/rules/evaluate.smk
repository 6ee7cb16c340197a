# Stage 4b: evaluation against the reference over the historical period, figures for the report.


def evaluation_inputs():
    ys = years(EVAL_EXP)
    ins = {
        "reference": expand(f"{OUT}/reference/fine/{{variable}}.nc", variable=VARS),
        "coarse": expand(f"{OUT}/reference/coarse/{{variable}}.nc", variable=VARS),
        "reference_indices": f"{OUT}/indices/reference.nc",
    }
    if config["downscale"].get("evaluation_run", True):
        ins["downscaled"] = [p for y in ys for p in deliverables(REF, EVAL_EXP, EVAL_MEMBER, y)]
        ins["baseline"] = [p for y in ys for p in deliverables(REF, EVAL_EXP, EVAL_MEMBER, y, baseline=True)]
        ins["checks"] = [f"{OUT}/checks/{REF}/{EVAL_EXP}/{EVAL_MEMBER}/{y}.json" for y in ys]
    ins["gcm_indices"] = expand(
        f"{OUT}/indices/{{source}}/{HIST}/{{member}}/r{{sample}}.nc",
        source=SOURCES,
        member=MEMBERS,
        sample=range(1, NSAMPLES + 1),
    )
    return ins


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
            patterns=["{name}.csv"],
            caption="../report/tables.rst",
            category="Evaluation",
            subcategory="Tables",
        ),
        figures=report(
            directory(f"{OUT}/evaluation/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Evaluation",
            subcategory="Figures",
        ),
    log:
        f"{OUT}/logs/evaluate.log",
    script:
        "../scripts/evaluate.py"
