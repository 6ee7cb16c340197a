from aid.regrid import regrid_file
from aid.smk import run_each

run_each(snakemake, regrid_file, [
    dict(in_path=src, config=snakemake.config, out_path=out)
    for src, out in zip(snakemake.input.data, snakemake.output)
])
