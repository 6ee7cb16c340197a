from aid.indices import compute_sample_indices
from aid.smk import run, stage_config

run(snakemake, compute_sample_indices, config=stage_config(snakemake), run_paths=list(snakemake.input.run),
    base_paths=list(snakemake.input.base), experiment=snakemake.wildcards.experiment, out_path=snakemake.output[0])
