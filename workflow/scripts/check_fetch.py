from aid.fetch import check_completeness
from aid.smk import run, stage_config

wc = snakemake.wildcards
run(snakemake, check_completeness, paths=list(snakemake.input), config=stage_config(snakemake), source=wc.source,
    experiment=wc.experiment, member=wc.member, out_path=snakemake.output[0])
