from aid.indices import compute_reference_indices
from aid.smk import run, stage_config

run(snakemake, compute_reference_indices, config=stage_config(snakemake), paths=list(snakemake.input),
    out_path=snakemake.output[0])
