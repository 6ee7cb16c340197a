from aid.model.train import train_from_config
from aid.smk import run, stage_config

run(snakemake, train_from_config, config=stage_config(snakemake), fine_paths=list(snakemake.input.fine),
    coarse_paths=list(snakemake.input.coarse), static_path=snakemake.input.static,
    checkpoint_out=snakemake.output.checkpoint, threads=snakemake.threads)
