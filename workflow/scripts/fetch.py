from aid.fetch import fetch_dataset
from aid.smk import run

wc = snakemake.wildcards
run(snakemake, fetch_dataset, catalog_path=snakemake.input.catalog, config=snakemake.config, source=wc.source,
    experiment=wc.experiment, member=wc.member, variable=wc.variable, out_path=snakemake.output[0])
