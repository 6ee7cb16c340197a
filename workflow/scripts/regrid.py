from aid.regrid import regrid_file
from aid.smk import run

run(snakemake, regrid_file, in_path=snakemake.input.data, config=snakemake.config, out_path=snakemake.output[0])
