# Stage 1: demo archive (optional), catalog, fetch + standardise, completeness check.


if DEMO:

    rule demo_archive:
        """GCM-like CMIP6-style archive + 0.25 deg reference, DERIVED FROM REAL ERA5 (not GCM output)."""
        output:
            manifest=f"{OUT}/demo-archive/manifest.json",
        log:
            f"{OUT}/logs/demo_archive.log",
        benchmark:
            f"{OUT}/benchmarks/demo_archive.tsv"
        params:
            era5_dir=config["demo_archive"]["era5_dir"],
            out_root=lambda wildcards, output: str(Path(output.manifest).parent),
            config=cfg_slice("demo_archive", "evaluation.period", "model.train.years", "model.train.val_fraction",
                             "model.train.val_block_days"),
        conda:
            "../../envs/fetch.yaml"
        script:
            "../scripts/demo_archive.py"


if not config["catalog"]["path"]:

    rule catalog:
        """intake-esm ESM collection (JSON + CSV) of a CMIP6 DRS tree."""
        input:
            reference_inputs(),
        output:
            json=f"{OUT}/catalog/catalog.json",
            csv=f"{OUT}/catalog/catalog.csv",
        log:
            f"{OUT}/logs/catalog.log",
        benchmark:
            f"{OUT}/benchmarks/catalog.tsv"
        params:
            root=config["catalog"]["build_root"],
        conda:
            "../../envs/fetch.yaml"
        script:
            "../scripts/catalog.py"


rule fetch:
    """Search the catalog by facets; standardise names, units, calendar, longitudes; crop to region+halo.

    One job per (source, experiment, member) writes one file per variable: the per-job start-up
    (Python, xarray, the catalog) costs more than standardising a variable of a regional box.
    """
    input:
        catalog=catalog_path(),
    output:
        expand(f"{OUT}/fetch/{{{{source}}}}/{{{{experiment}}}}/{{{{member}}}}/{{variable}}.nc", variable=VARS),
    params:
        variables=VARS,
        config=lambda wildcards: cfg_slice(
            "search.variables", "search.table_id", "search.frequency", f"search.experiments.{wildcards.experiment}",
            "domain.lat", "domain.lon", "domain.halo_cells", "grid.coarse_resolution", "catalog.storage_options",
        ),
    log:
        f"{OUT}/logs/fetch/{{source}}_{{experiment}}_{{member}}.log",
    benchmark:
        f"{OUT}/benchmarks/fetch/{{source}}_{{experiment}}_{{member}}.tsv"
    resources:
        mem_mb=scaled_mem("fetch"),
        runtime=scaled_runtime("fetch"),
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/fetch.py"


rule check_fetch:
    """Time coverage, all-NaN slices and physical bounds of every fetched variable; fails early."""
    input:
        expand(f"{OUT}/fetch/{{{{source}}}}/{{{{experiment}}}}/{{{{member}}}}/{{variable}}.nc", variable=VARS),
    output:
        f"{OUT}/fetch/{{source}}/{{experiment}}/{{member}}/completeness.json",
    params:
        config=lambda wildcards: cfg_slice("search.variables", f"search.experiments.{wildcards.experiment}"),
    log:
        f"{OUT}/logs/check_fetch/{{source}}_{{experiment}}_{{member}}.log",
    benchmark:
        f"{OUT}/benchmarks/check_fetch/{{source}}_{{experiment}}_{{member}}.tsv"
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/check_fetch.py"
