# Stage 5: what a user downloads and opens first: the output catalog, checksums, the report's landing page.


def delivery_inputs(wildcards=None):
    """Every delivered file by kind (aid.deliver), plus the checks that passed on them."""
    jobs = all_downscale_jobs()
    samples = range(1, NSAMPLES + 1)
    ins = {
        "downscaled": all_delivered(),
        "baseline": all_delivered(baseline=True),
        "indices": expand(
            f"{OUT}/indices/{{source}}/{{experiment}}/{{member}}/r{{sample}}.nc",
            source=SOURCES,
            experiment=EXPERIMENTS,
            member=MEMBERS,
            sample=samples,
        ),
        "ensemble": expand(f"{OUT}/indices/ensemble/{{source}}_{{experiment}}.nc", source=SOURCES, experiment=EXPERIMENTS),
        "adjusted": expand(
            f"{OUT}/adjusted/{{source}}/{{experiment}}/{{member}}.nc",
            source=SOURCES,
            experiment=EXPERIMENTS,
            member=MEMBERS,
        ),
        "regridded": expand(
            f"{OUT}/regrid/{{source}}/{{experiment}}/{{member}}/{VARS[0]}.nc",
            source=SOURCES,
            experiment=EXPERIMENTS,
            member=MEMBERS,
        ),
        "checks": [f"{OUT}/checks/{j['source']}/{j['experiment']}/{j['member']}/{j['year']}.json" for j in jobs],
        "coarse_reference": [],
    }
    if config["downscale"]["evaluation_run"]:
        ins["coarse_reference"] = expand(f"{OUT}/reference/coarse/{{variable}}.nc", variable=VARS)
    return ins


rule deliver:
    """intake-esm output catalog with xscen's columns (aid-catalog.json + .csv), value ranges, SHA256SUMS."""
    input:
        **delivery_inputs(),
    output:
        catalog=f"{OUT}/aid-catalog.json",
        catalog_csv=f"{OUT}/aid-catalog.csv",
        ranges=f"{OUT}/aid-value-ranges.csv",
        sha256sums=f"{OUT}/SHA256SUMS",
    params:
        config=cfg_slice(
            "domain.id", "reference.name", "downscale.institution_id", "downscale.product_version", "indices.freq"
        ),
    log:
        f"{OUT}/logs/deliver.log",
    benchmark:
        f"{OUT}/benchmarks/deliver.tsv"
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/deliver.py"


def landing_inputs(wildcards=None):
    ins = {
        "metrics": f"{OUT}/evaluation/metrics.json",
        "tables": f"{OUT}/evaluation/tables",
        "reference": expand(f"{OUT}/reference/fine/{{variable}}.nc", variable=VARS),
        "coarse": expand(f"{OUT}/reference/coarse/{{variable}}.nc", variable=VARS),
        "ensemble": [
            f"{OUT}/indices/ensemble/{s}_{e}.nc" for s in SOURCES for e in EXPERIMENTS if e not in (HIST, EVAL_EXP)
        ],
        "checkpoint": checkpoint_path(),
        "catalog": f"{OUT}/aid-catalog.json",
        "sha256sums": f"{OUT}/SHA256SUMS",
        "downscaled": [],
    }
    if config["downscale"]["evaluation_run"]:
        ins["downscaled"] = delivered(REF, EVAL_EXP, EVAL_MEMBER)
    return ins


rule landing:
    """The report's first page (workflow/report/workflow.rst includes it): scores, maps, change, cost, inputs."""
    input:
        **landing_inputs(),
    output:
        report(
            f"{OUT}/report/landing.html",
            caption="../report/landing.rst",
            category="Overview",
        ),
    params:
        config=cfg_slice(
            "search",
            "catalog",
            "domain",
            "reference",
            "downscale.n_samples",
            "downscale.seed",
            "evaluation.period",
            "indices.base_period",
        ),
        benchmarks=f"{OUT}/benchmarks",
    log:
        f"{OUT}/logs/landing.log",
    benchmark:
        f"{OUT}/benchmarks/landing.tsv"
    conda:
        "../../envs/evaluate.yaml"
    script:
        "../scripts/landing.py"
