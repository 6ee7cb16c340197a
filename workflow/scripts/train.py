from aid.model.launch import train
from aid.smk import run, stage_config

# gpu: N > 1 (profile set-resources) trains with DDP under torchrun, one process per GPU
run(snakemake, train, config=stage_config(snakemake), fine_paths=list(snakemake.input.fine),
    coarse_paths=list(snakemake.input.coarse), static_path=snakemake.input.static,
    checkpoint_out=snakemake.output.checkpoint, threads=snakemake.threads,
    gpus=int(getattr(snakemake.resources, "gpu", 1) or 1))
