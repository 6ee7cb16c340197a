from aid.signal import signal_files
from aid.smk import run, stage_config

i, w = snakemake.input, snakemake.wildcards
run(snakemake, signal_files, raw_reference=list(i.raw_reference), raw_scenario=list(i.raw_scenario),
    adjusted_reference=list(i.adjusted_reference), adjusted_scenario=list(i.adjusted_scenario),
    downscaled_reference=list(i.downscaled_reference), downscaled_scenario=list(i.downscaled_scenario),
    config=stage_config(snakemake), source=w.source, experiment=w.experiment,
    reference_experiment=snakemake.params.reference_experiment, out_csv=snakemake.output.table,
    out_png=snakemake.output.figure)
