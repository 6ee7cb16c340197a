from aid.demo import write_demo_archive
from aid.smk import run

run(snakemake, write_demo_archive, config=snakemake.config, era5_dir=snakemake.params.era5_dir,
    out_root=snakemake.params.out_root, manifest_path=snakemake.output.manifest)
