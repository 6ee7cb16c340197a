# Stage 3b: one downscaling job per (source, experiment, member, year), a bicubic baseline, checks.


def job_outputs(patterns):
    """The yearly files are temporary when rule join_years delivers multi-year files instead."""
    return [temp(p) for p in patterns] if YEARS_PER_FILE > 1 else patterns


rule downscale:
    """N seeded diffusion samples of one year at 0.25 deg, streamed day-batch by day-batch."""
    input:
        coarse=coarse_inputs,
        checkpoint=checkpoint_path(),
        # static fields of the domain's grid (the checkpoint may have been trained elsewhere)
        static=config["reference"]["static"],
    output:
        job_outputs(naming.deliverable_patterns(config)),
    log:
        f"{OUT}/logs/downscale/{{source}}_{{experiment}}_{{member}}_{{year}}0101-{{end}}.log",
    benchmark:
        f"{OUT}/benchmarks/downscale/{{source}}_{{experiment}}_{{member}}_{{year}}0101-{{end}}.tsv"
    params:
        # Changing the ensemble size, the seed, the sampler or the device re-runs exactly these jobs.
        config=cfg_slice(*NAMING_KEYS, *DRIVING_KEYS, *IDENTITY_KEYS, "domain.lat", "domain.lon", "grid", "downscale.n_samples",
                         "downscale.seed", "downscale.steps", "downscale.churn", "downscale.rho",
                         "downscale.sigma_max", "downscale.noise_scale", "downscale.day_correlation", "downscale.conserve",
                         "downscale.device"),
        execution=execution_settings,
    resources:
        gpu=1,
        mem_mb=scaled_mem("downscale"),
        runtime=scaled_runtime("downscale"),
    # One thread per job: on a laptop two single-thread jobs side by side beat one two-thread job
    # (the small networks scale poorly and oversubscribed OpenMP threads spin). On HPC raise it
    # with `set-threads: downscale=N` in a profile, or use the GPU.
    threads: 1
    conda:
        "../../envs/downscale.yaml"
    script:
        "../scripts/downscale.py"


rule baseline:
    """BCSD-like reference deliverable: bias-adjusted coarse fields upsampled bicubically."""
    input:
        coarse=coarse_inputs,
        static=config["reference"]["static"],
    output:
        job_outputs(naming.deliverable_patterns(config, baseline=True)),
    params:
        config=cfg_slice(*NAMING_KEYS, *DRIVING_KEYS, *IDENTITY_KEYS, "domain.lat", "domain.lon", "grid"),
        execution=execution_settings,
    log:
        f"{OUT}/logs/baseline/{{source}}_{{experiment}}_{{member}}_{{year}}0101-{{end}}.log",
    benchmark:
        f"{OUT}/benchmarks/baseline/{{source}}_{{experiment}}_{{member}}_{{year}}0101-{{end}}.tsv"
    resources:
        mem_mb=scaled_mem("baseline"),
        runtime=scaled_runtime("baseline"),
    conda:
        "../../envs/downscale.yaml"
    script:
        "../scripts/baseline.py"


if YEARS_PER_FILE > 1:

    rule join_years:
        """One CORDEX multi-year deliverable joined from the yearly files of one variable and sample."""
        input:
            join_inputs,
        output:
            naming.block_pattern(config),
        params:
            config=cfg_slice(*IDENTITY_KEYS),
        wildcard_constraints:
            stage=r"downscale|baseline",
            model=rf"{naming.MODEL_ID}|{naming.BASELINE_ID}",
            first=r"\d{4}",
            last=r"\d{4}",
        log:
            f"{OUT}/logs/join_years/{{stage}}_{{variable}}_{{source}}_{{experiment}}_{{member}}_{{model}}_r{{sample}}_"
            f"{{first}}-{{last}}_{{end}}.log",
        conda:
            "../../envs/downscale.yaml"
        script:
            "../scripts/join_years.py"


rule check:
    """Physical checks of one job's deliverables; a violation fails the run."""
    input:
        downscaled=lambda wc: deliverables(wc.source, wc.experiment, wc.member, wc.year),
        baseline=lambda wc: deliverables(wc.source, wc.experiment, wc.member, wc.year, baseline=True),
    output:
        f"{OUT}/checks/{{source}}/{{experiment}}/{{member}}/{{year}}.json",
    params:
        config=cfg_slice("search.variables", "downscale.n_samples"),
    log:
        f"{OUT}/logs/check/{{source}}_{{experiment}}_{{member}}_{{year}}.log",
    benchmark:
        f"{OUT}/benchmarks/check/{{source}}_{{experiment}}_{{member}}_{{year}}.tsv"
    conda:
        "../../envs/downscale.yaml"
    script:
        "../scripts/check.py"


rule downscale_member:
    """Target: every year of one (source, experiment, member), e.g.
    snakemake --cores 2 results/targets/AID-ERA5-DERIVED/ssp245/r2i1p1f1.done"""
    input:
        lambda wc: [
            f"{OUT}/checks/{wc.source}/{wc.experiment}/{wc.member}/{y}.json" for y in years(wc.experiment)
        ],
    output:
        touch(f"{OUT}/targets/{{source}}/{{experiment}}/{{member}}.done"),


rule downscale_experiment:
    """Target: every member and year of one scenario, e.g.
    snakemake --cores 2 results/targets/AID-ERA5-DERIVED/ssp245.done"""
    input:
        lambda wc: [
            f"{OUT}/checks/{wc.source}/{wc.experiment}/{m}/{y}.json" for m in MEMBERS for y in years(wc.experiment)
        ],
    output:
        touch(f"{OUT}/targets/{{source}}/{{experiment}}.done"),
