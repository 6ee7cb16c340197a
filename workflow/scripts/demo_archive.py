from aid.demo import write_demo_archive
from aid.smk import run, stage_config

run(snakemake, write_demo_archive, config=stage_config(snakemake), era5_dir=snakemake.params.era5_dir,
    out_root=snakemake.params.out_root, manifest_path=snakemake.output.manifest)
