from aid.reference import prepare_reference
from aid.smk import run

run(snakemake, prepare_reference, config=snakemake.config, variable=snakemake.wildcards.variable,
    fine_out=snakemake.output.fine, coarse_out=snakemake.output.coarse)
