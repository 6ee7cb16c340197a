from aid.reference import prepare_reference
from aid.smk import run_each, stage_config

run_each(snakemake, prepare_reference, [
    dict(config=stage_config(snakemake), variable=v, fine_out=fine, coarse_out=coarse)
    for v, fine, coarse in zip(snakemake.params.variables, snakemake.output.fine, snakemake.output.coarse)
])
