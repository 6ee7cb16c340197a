from aid.checks import check_job
from aid.smk import run, stage_config

run(snakemake, check_job, config=stage_config(snakemake), downscaled=list(snakemake.input.downscaled),
    baseline=list(snakemake.input.baseline), out_path=snakemake.output[0])
