from pathlib import Path

from aid.landing import write_landing
from aid.smk import run, stage_config

i = snakemake.input
ensemble = {Path(p).stem.partition("_")[2]: p for p in i.ensemble}  # <source>_<experiment>.nc -> experiment
run(snakemake, write_landing, out=snakemake.output[0], config=stage_config(snakemake), metrics=i.metrics,
    properties=str(Path(i.tables) / "all_properties.csv"), reference=list(i.reference), coarse=list(i.coarse),
    downscaled=list(i.downscaled), ensemble=ensemble, checkpoint=i.checkpoint, catalog=i.catalog,
    benchmarks=snakemake.params.benchmarks)
