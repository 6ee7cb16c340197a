from aid.fetch import fetch_dataset
from aid.smk import run_each, stage_config

wc = snakemake.wildcards
run_each(snakemake, fetch_dataset, [
    dict(catalog_path=snakemake.input.catalog, config=stage_config(snakemake), source=wc.source, experiment=wc.experiment,
         member=wc.member, variable=v, out_path=out)
    for v, out in zip(snakemake.params.variables, snakemake.output)
])
