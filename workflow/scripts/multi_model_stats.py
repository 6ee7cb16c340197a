from aid.ensembles import multi_model_stats
from aid.smk import run, stage_config

sources = snakemake.params.sources
run(snakemake, multi_model_stats, config=stage_config(snakemake),
    run_paths={s: list(snakemake.input[f"run_{i}"]) for i, s in enumerate(sources)},
    base_paths={s: list(snakemake.input[f"base_{i}"]) for i, s in enumerate(sources)},
    experiment=snakemake.wildcards.experiment, out_path=snakemake.output[0])
