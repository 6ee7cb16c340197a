from aid.adjust import adjust_files
from aid.smk import run, stage_config

run(snakemake, adjust_files, sim_paths=list(snakemake.input.sim), trained_path=snakemake.input.trained,
    config=stage_config(snakemake), out_path=snakemake.output[0])
