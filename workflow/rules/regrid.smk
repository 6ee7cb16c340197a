# Stage 2: reference preparation, regridding to the model grid, bias adjustment.


rule reference:
    """ERA5 reference on the 0.25 deg domain grid and coarsened (same code path) to the model grid.

    Daily reference.files are used as they are; hourly ones (ERA5 as the CDS delivers it) are
    aggregated to days here when reference.aggregate_subdaily is true (aid.era5_daily), refused otherwise.
    """
    input:
        reference_inputs(),
    output:
        fine=expand(f"{OUT}/reference/fine/{{variable}}.nc", variable=VARS),
        coarse=expand(f"{OUT}/reference/coarse/{{variable}}.nc", variable=VARS),
    params:
        variables=VARS,
        config=cfg_slice("reference", "domain.lat", "domain.lon", "grid", "regrid.backend"),
    log:
        f"{OUT}/logs/reference.log",
    benchmark:
        f"{OUT}/benchmarks/reference.tsv"
    conda:
        "../../envs/regrid.yaml"
    script:
        "../scripts/reference.py"


rule regrid:
    """Conservative regridding of a fetched GCM dataset (every variable) to the model's coarse grid."""
    input:
        data=expand(f"{OUT}/fetch/{{{{source}}}}/{{{{experiment}}}}/{{{{member}}}}/{{variable}}.nc", variable=VARS),
        complete=f"{OUT}/fetch/{{source}}/{{experiment}}/{{member}}/completeness.json",
    output:
        expand(f"{OUT}/regrid/{{{{source}}}}/{{{{experiment}}}}/{{{{member}}}}/{{variable}}.nc", variable=VARS),
    params:
        config=cfg_slice("regrid", "domain.lat", "domain.lon", "grid"),
    log:
        f"{OUT}/logs/regrid/{{source}}_{{experiment}}_{{member}}.log",
    benchmark:
        f"{OUT}/benchmarks/regrid/{{source}}_{{experiment}}_{{member}}.tsv"
    resources:
        mem_mb=scaled_mem("regrid"),
        runtime=scaled_runtime("regrid"),
    conda:
        "../../envs/regrid.yaml"
    script:
        "../scripts/regrid.py"


rule train_adjustment:
    """xsdba adjustment factors per (source, member), trained on the reference period."""
    input:
        hist=expand(f"{OUT}/regrid/{{{{source}}}}/{HIST}/{{{{member}}}}/{{variable}}.nc", variable=VARS),
        ref=expand(f"{OUT}/reference/coarse/{{variable}}.nc", variable=VARS),
    output:
        f"{OUT}/adjust-factors/{{source}}/{{member}}.nc",
    params:
        # what training reads; adjust.interp/extrapolation only change how the factors are applied
        config=cfg_slice(*ADJUST_TRAIN_KEYS, "reference.name"),
    log:
        f"{OUT}/logs/train_adjustment/{{source}}_{{member}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_adjustment/{{source}}_{{member}}.tsv"
    resources:
        mem_mb=scaled_mem("train_adjustment"),
        runtime=scaled_runtime("train_adjustment"),
    conda:
        "../../envs/adjust.yaml"
    script:
        "../scripts/train_adjustment.py"


rule adjust:
    """Apply the trained factors to every variable of one (source, experiment, member)."""
    input:
        sim=expand(f"{OUT}/regrid/{{{{source}}}}/{{{{experiment}}}}/{{{{member}}}}/{{variable}}.nc", variable=VARS),
        trained=f"{OUT}/adjust-factors/{{source}}/{{member}}.nc",
    output:
        f"{OUT}/adjusted/{{source}}/{{experiment}}/{{member}}.nc",
    params:
        config=cfg_slice("adjust", "reference.name", "domain.id"),
    log:
        f"{OUT}/logs/adjust/{{source}}_{{experiment}}_{{member}}.log",
    benchmark:
        f"{OUT}/benchmarks/adjust/{{source}}_{{experiment}}_{{member}}.tsv"
    resources:
        mem_mb=scaled_mem("adjust"),
        runtime=scaled_runtime("adjust"),
    conda:
        "../../envs/adjust.yaml"
    script:
        "../scripts/adjust.py"
