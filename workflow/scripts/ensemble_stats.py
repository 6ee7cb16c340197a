from aid.indices import ensemble_stats
from aid.smk import run

run(snakemake, ensemble_stats, config=snakemake.config, run_paths=list(snakemake.input.run),
    base_paths=list(snakemake.input.base), experiment=snakemake.wildcards.experiment, out_path=snakemake.output[0])
