from aid.deliver import deliver
from aid.smk import run, stage_config

i, o = snakemake.input, snakemake.output
run(snakemake, deliver, config=stage_config(snakemake), downscaled=list(i.downscaled), baseline=list(i.baseline),
    indices=list(i.indices), ensemble=list(i.ensemble), adjusted=list(i.adjusted), regridded=list(i.regridded),
    coarse_reference=list(i.coarse_reference), catalog_json=o.catalog, ranges_csv=o.ranges, sha256sums=o.sha256sums)
