rule signal:
    """Change signal (scenario minus historical) of the raw GCM, the adjusted GCM and the downscaled
    ensemble per variable, season and statistic (mean, 50/90/99 % quantiles): QDM's promise shown."""
    input:
        unpack(signal_inputs),
    output:
        table=report(
            f"{OUT}/signal/{{source}}_{{experiment}}.csv",
            caption="../report/signal.rst",
            category="Change signal",
            subcategory="{source} {experiment}",
            labels={"scenario": "{experiment}", "kind": "table"},
        ),
        figure=report(
            f"{OUT}/signal/{{source}}_{{experiment}}.png",
            caption="../report/signal.rst",
            category="Change signal",
            subcategory="{source} {experiment}",
            labels={"scenario": "{experiment}", "kind": "figure"},
        ),
    params:
        config=cfg_slice("signal", "search.variables"),
        reference_experiment=HIST,
    log:
        f"{OUT}/logs/signal/{{source}}_{{experiment}}.log",
    benchmark:
        f"{OUT}/benchmarks/signal/{{source}}_{{experiment}}.tsv"
    conda:
        "../../envs/evaluate.yaml"
    script:
        "../scripts/signal.py"
