# Stage 4a: xclim extremes indices per (source, experiment, member, sample) and ensemble statistics.


rule indices:
    """xclim indicators (config indices.names) of one diffusion sample of one member."""
    input:
        run=index_run_inputs,
        base=index_base_inputs,
    output:
        f"{OUT}/indices/{{source}}/{{experiment}}/{{member}}/r{{sample}}.nc",
    params:
        config=cfg_slice("indices", "reference.name", "domain.id"),
    log:
        f"{OUT}/logs/indices/{{source}}_{{experiment}}_{{member}}_r{{sample}}.log",
    benchmark:
        f"{OUT}/benchmarks/indices/{{source}}_{{experiment}}_{{member}}_r{{sample}}.tsv"
    resources:
        mem_mb=scaled_mem("indices"),
        runtime=scaled_runtime("indices"),
    conda:
        "../../envs/indices.yaml"
    script:
        "../scripts/indices.py"


rule reference_indices:
    """The same indicators computed from the 0.25 deg reference, for the evaluation."""
    input:
        expand(f"{OUT}/reference/fine/{{variable}}.nc", variable=VARS),
    output:
        f"{OUT}/indices/reference.nc",
    params:
        config=cfg_slice("indices", "reference.name", "domain.id"),
    log:
        f"{OUT}/logs/indices/reference.log",
    benchmark:
        f"{OUT}/benchmarks/indices/reference.tsv"
    conda:
        "../../envs/indices.yaml"
    script:
        "../scripts/reference_indices.py"


rule ensemble_stats:
    """Median, 10th and 90th percentiles across members and samples; change vs the base period."""
    input:
        run=lambda wc: expand(
            f"{OUT}/indices/{wc.source}/{wc.experiment}/{{member}}/r{{sample}}.nc",
            member=MEMBERS,
            sample=range(1, NSAMPLES + 1),
        ),
        base=lambda wc: expand(
            f"{OUT}/indices/{wc.source}/{HIST}/{{member}}/r{{sample}}.nc",
            member=MEMBERS,
            sample=range(1, NSAMPLES + 1),
        ),
    output:
        report(
            f"{OUT}/indices/ensemble/{{source}}_{{experiment}}.nc",
            caption="../report/ensemble_stats.rst",
            category="Indices",
            subcategory="{experiment}",
        ),
    params:
        config=cfg_slice("indices", "domain.id"),
    log:
        f"{OUT}/logs/ensemble_stats/{{source}}_{{experiment}}.log",
    benchmark:
        f"{OUT}/benchmarks/ensemble_stats/{{source}}_{{experiment}}.tsv"
    conda:
        "../../envs/indices.yaml"
    script:
        "../scripts/ensemble_stats.py"


if len(SOURCES) > 1:

    rule multi_model_stats:
        """Multi-model ensemble: every GCM weighs equally, its members and samples share its weight."""
        input:
            unpack(multi_model_inputs),
        params:
            sources=SOURCES,
            config=cfg_slice("indices"),
        output:
            report(
                f"{OUT}/indices/multi-model/{{experiment}}.nc",
                caption="../report/ensemble_stats.rst",
                category="Indices",
                subcategory="{experiment}",
            ),
        log:
            f"{OUT}/logs/multi_model_stats/{{experiment}}.log",
        benchmark:
            f"{OUT}/benchmarks/multi_model_stats/{{experiment}}.tsv"
        conda:
            "../../envs/indices.yaml"
        script:
            "../scripts/multi_model_stats.py"
