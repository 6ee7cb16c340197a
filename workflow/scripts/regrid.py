from aid.regrid import regrid_file
from aid.smk import run_each, stage_config

run_each(snakemake, regrid_file, [
    dict(in_path=src, config=stage_config(snakemake), out_path=out)
    for src, out in zip(snakemake.input.data, snakemake.output)
])
