from aid.downscale import baseline_year
from aid.smk import run, stage_config

wc = snakemake.wildcards
run(snakemake, baseline_year, config=stage_config(snakemake), coarse_paths=list(snakemake.input.coarse),
    source=wc.source, experiment=wc.experiment, member=wc.member, year=int(wc.year), outputs=list(snakemake.output))
