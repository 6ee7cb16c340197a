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

# A user's --configfile / --config replaces the default's lists and collections (experiments,
# reference files, adjustment methods) instead of merging into them; sections still merge.
from aid.config import check_semantics, check_years, resolve_placeholders, snakemake_user_config

_merged = snakemake_user_config("config/config.yaml", list(workflow.config_settings.configfiles), dict(workflow.config_settings.config))
config.clear()
config.update(_merged)
_source = " + ".join(map(str, workflow.config_settings.configfiles)) or "config/config.yaml"

validate(config, "config/schema.yaml")

# Semantic checks (reversed years, unknown variables, unsafe output paths) beyond the schema, and
# the years given in several places against each other and the user's catalog.
check_semantics(config, source=_source)
check_years(config, source=_source)
config.update(resolve_placeholders(config))  # "{output_dir}" in paths


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/regrid.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/downscale.smk"
include: "workflow/rules/indices.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/signal.smk"
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
    multi_model_stats,


if not config["catalog"]["path"]:

    localrules:
        catalog,


rule all:
    input:
        all_targets(),
    default_target: True
