# aid: CMIP6 -> 0.25 deg regional climate fields and extremes with a diffusion downscaler.
#
#   snakemake --cores 2                    # default run on the sample data
#   snakemake --profile slurm              # on a SLURM cluster (see slurm/config.yaml)
#
# Data flow: demo_archive? -> catalog -> fetch -> check_fetch -> regrid -> train_adjustment -> adjust
#            reference -> train -> downscale (+ baseline) -> check -> indices -> ensemble_stats
#            -> evaluate -> deliver (output catalog, SHA256SUMS) -> landing (report first page)
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")

# Semantic checks (reversed years, unknown variables, unsafe output paths) beyond the schema.
from aid.config import check_semantics, resolve_placeholders

check_semantics(config, source="config")
config.update(resolve_placeholders(config))  # "{output_dir}" in paths


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/regrid.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/downscale.smk"
include: "workflow/rules/indices.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/deliver.smk"


# Seconds-long bookkeeping rules run in the Snakemake process itself, not as cluster jobs: each SLURM
# job costs ~10 s of submission, Snakemake start-up and status polling (docs/SLURM.md).
localrules:
    check_fetch,
    check,
    downscale_member,
    downscale_experiment,
    ensemble_stats,
    landing,


if not config["catalog"].get("path"):

    localrules:
        catalog,


rule all:
    input:
        all_targets(),
    default_target: True
