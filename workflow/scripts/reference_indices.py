from aid.indices import compute_reference_indices
from aid.smk import run

run(snakemake, compute_reference_indices, config=snakemake.config, paths=list(snakemake.input),
    out_path=snakemake.output[0])
