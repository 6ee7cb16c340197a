from aid.catalog import build_catalog
from aid.smk import run

run(snakemake, build_catalog, root=snakemake.params.root, out_json=snakemake.output.json)
