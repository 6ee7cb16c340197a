from aid.checks import check_job
from aid.smk import run

run(snakemake, check_job, config=snakemake.config, downscaled=list(snakemake.input.downscaled),
    baseline=list(snakemake.input.baseline), out_path=snakemake.output[0])
