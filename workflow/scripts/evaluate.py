from aid.evaluate.run import evaluate
from aid.smk import run, stage_config

i = snakemake.input
run(snakemake, evaluate, config=stage_config(snakemake), reference=list(i.reference), coarse=list(i.coarse),
    downscaled=list(i.get("downscaled", [])), baseline=list(i.get("baseline", [])),
    reference_indices=i.reference_indices, gcm_indices=list(i.gcm_indices),
    metrics_out=snakemake.output.metrics, tables_dir=snakemake.output.tables, figures_dir=snakemake.output.figures)
