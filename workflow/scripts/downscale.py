from aid.downscale import downscale_year
from aid.smk import run, stage_config

wc = snakemake.wildcards
run(snakemake, downscale_year, config=stage_config(snakemake), coarse_paths=list(snakemake.input.coarse),
    checkpoint=snakemake.input.checkpoint, source=wc.source, experiment=wc.experiment, member=wc.member,
    year=int(wc.year), outputs=list(snakemake.output), threads=snakemake.threads,
    static_path=snakemake.input.static)
