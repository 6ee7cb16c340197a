from aid.adjust import train_adjustment_files
from aid.smk import run, stage_config

run(snakemake, train_adjustment_files, hist_paths=list(snakemake.input.hist), ref_paths=list(snakemake.input.ref),
    config=stage_config(snakemake), out_path=snakemake.output[0])
