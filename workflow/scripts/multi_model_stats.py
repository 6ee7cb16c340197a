from aid.ensembles import multi_model_stats
from aid.smk import run

sources = snakemake.params.sources
run(snakemake, multi_model_stats, config=snakemake.config,
    run_paths={s: list(snakemake.input[f"run_{i}"]) for i, s in enumerate(sources)},
    base_paths={s: list(snakemake.input[f"base_{i}"]) for i, s in enumerate(sources)},
    experiment=snakemake.wildcards.experiment, out_path=snakemake.output[0])
