from aid.indices import compute_sample_indices
from aid.smk import run

run(snakemake, compute_sample_indices, config=snakemake.config, run_paths=list(snakemake.input.run),
    base_paths=list(snakemake.input.base), experiment=snakemake.wildcards.experiment, out_path=snakemake.output[0])
