from aid.join_years import join_years
from aid.smk import run, stage_config

run(snakemake, join_years, config=stage_config(snakemake), inputs=list(snakemake.input), output=snakemake.output[0])
