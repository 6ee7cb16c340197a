from aid.indices import ensemble_stats
from aid.smk import run, stage_config

run(snakemake, ensemble_stats, config=stage_config(snakemake), run_paths=list(snakemake.input.run),
    base_paths=list(snakemake.input.base), experiment=snakemake.wildcards.experiment, out_path=snakemake.output[0])
