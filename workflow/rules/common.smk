# Paths, wildcard constraints and target lists shared by every rule file.
from pathlib import Path

from aid import naming, resources
from aid.config_slice import config_slice

OUT = config["output_dir"]
VARS = list(config["search"]["variables"])
SOURCES = list(config["search"]["sources"])
EXPERIMENTS = list(config["search"]["experiments"])
MEMBERS = list(config["search"]["members"])
REF = config["reference"]["name"]
EVAL_EXP = naming.EVALUATION_EXPERIMENT
EVAL_MEMBER = naming.EVALUATION_MEMBER
HIST = "historical"
NSAMPLES = int(config["downscale"]["n_samples"])
DEMO = bool(config["demo_archive"]["enabled"])
#: 1: the downscale jobs' yearly files are the deliverables; 5: rule join_years makes CORDEX 5-year files.
YEARS_PER_FILE = int(config["deliverables"]["years_per_file"])


wildcard_constraints:
    source=r"[A-Za-z0-9-]+",
    experiment=r"[A-Za-z0-9-]+",
    member=naming.MEMBER_RE,
    variable=r"[A-Za-z]+",
    year=r"\d{4}",
    sample=r"\d+",
    end=r"\d{8}",


def cfg_slice(*paths):
    """The config keys one rule reads, as its ``params.config`` (aid.config_slice): Snakemake's
    params trigger then re-runs the rule's jobs exactly when one of these keys changes."""
    return config_slice(config, *paths)


#: What the downscaling jobs' files are named from (aid.naming.deliverable_paths), besides the model.
NAMING_KEYS = ("output_dir", "domain.id", "search.variables", "downscale.product_version",
               "downscale.institution_id", "deliverables.calendars")
#: What the deliverables' identity attributes are made from, besides the data (tracking_id).
IDENTITY_KEYS = ("deliverables.tracking_prefix",)
#: The adjust keys training the factors reads (the adjust rule gets the whole section).
ADJUST_TRAIN_KEYS = ("adjust.reference_period", "adjust.calendar", "adjust.group", "adjust.window",
                     "adjust.nquantiles", "adjust.methods", "adjust.multivariate", "adjust.temperatures",
                     "adjust.range_methods")
#: Driving-data identity written into the deliverables (aid.deliverables.driving_attributes).
DRIVING_KEYS = ("reference.name", "demo_archive.enabled", "demo_archive.source_id", "demo_archive.institution_id")


def execution_settings(wildcards, threads):
    """Settings that change how a job runs but not its numbers (batch_days: the sampler's noise and
    micro-batches do not depend on it). A params function of ``threads`` is a *derived* param, which
    Snakemake does not track, so changing these re-runs nothing."""
    return {"downscale.batch_days": config["downscale"]["batch_days"]}


def scaled_mem(rule):
    """mem_mb of one job, scaled with its domain cells x days x variables (aid/resources.py)."""
    return lambda wildcards, attempt: resources.request(config, rule, dict(wildcards.items()), attempt)["mem_mb"]


def scaled_runtime(rule):
    """runtime (minutes) of one job, scaled like :func:`scaled_mem`."""
    return lambda wildcards, attempt: resources.request(config, rule, dict(wildcards.items()), attempt)["runtime"]


def catalog_path():
    """The intake-esm catalog: the user's (config catalog.path) or the one the workflow builds."""
    if config["catalog"]["path"]:
        return config["catalog"]["path"]
    return f"{OUT}/catalog/catalog.json"


def checkpoint_path():
    """An existing checkpoint from config (then `train` does not run) or the trained one."""
    return config["model"]["checkpoint"] or f"{OUT}/model/checkpoint.pt"


def reference_inputs(wildcards=None):
    """Reference ERA5 daily files (the demo archive writes them when enabled)."""
    if DEMO:
        return [f"{OUT}/demo-archive/manifest.json"]
    return []


def years(experiment):
    return naming.experiment_years(config, experiment)


def deliverables(source, experiment, member, year, baseline=False):
    return [str(p) for p in naming.deliverable_paths(config, source, experiment, member, year, baseline).values()]


def delivered(source, experiment, member, baseline=False, sample=None, years_=None):
    """Every delivered file of one (source, experiment, member), optionally of one sample or of the
    blocks holding some years: yearly or multi-year files (deliverables.years_per_file)."""
    paths = naming.delivered_paths(config, source, experiment, member, baseline, years_)
    return [str(p) for p in paths if sample is None or int(naming.parse_name(p)["sample"]) == int(sample)]


def all_delivered(baseline=False):
    """Every delivered file of the run, the evaluation run included."""
    out = [p for s in SOURCES for e in EXPERIMENTS for m in MEMBERS for p in delivered(s, e, m, baseline)]
    if config["downscale"]["evaluation_run"]:
        out += delivered(REF, EVAL_EXP, EVAL_MEMBER, baseline)
    return out


def all_downscale_jobs():
    return naming.downscale_jobs(config)


def all_targets():
    targets = []
    for job in all_downscale_jobs():
        targets.append(f"{OUT}/checks/{job['source']}/{job['experiment']}/{job['member']}/{job['year']}.json")
    for source in SOURCES:
        for experiment in EXPERIMENTS:
            targets.append(f"{OUT}/indices/ensemble/{source}_{experiment}.nc")
    if len(SOURCES) > 1:
        targets += [f"{OUT}/indices/multi-model/{experiment}.nc" for experiment in EXPERIMENTS]
    targets.append(f"{OUT}/evaluation/metrics.json")
    targets += signal_targets()
    targets += [f"{OUT}/aid-catalog.json", f"{OUT}/SHA256SUMS", f"{OUT}/report/landing.html"]
    return targets


def coarse_inputs(wildcards):
    """Bias-adjusted coarse fields; the evaluation run takes the coarsened reference itself."""
    if wildcards.experiment == EVAL_EXP:
        return expand(f"{OUT}/reference/coarse/{{variable}}.nc", variable=VARS)
    return [f"{OUT}/adjusted/{wildcards.source}/{wildcards.experiment}/{wildcards.member}.nc"]


def index_run_inputs(wildcards):
    return delivered(wildcards.source, wildcards.experiment, wildcards.member, sample=wildcards.sample)


def index_base_inputs(wildcards):
    """The historical base period of the same member and sample, for percentile thresholds."""
    if wildcards.experiment in (HIST, EVAL_EXP):
        return []
    return delivered(wildcards.source, HIST, wildcards.member, sample=wildcards.sample)


def multi_model_inputs(wildcards):
    """Index files of every source (``run_<i>``, ``base_<i>``: the historical base of the same realizations)."""
    ins = {}
    for i, source in enumerate(SOURCES):
        ins[f"run_{i}"] = expand(f"{OUT}/indices/{source}/{wildcards.experiment}/{{member}}/r{{sample}}.nc",
                                 member=MEMBERS, sample=range(1, NSAMPLES + 1))
        ins[f"base_{i}"] = expand(f"{OUT}/indices/{source}/{HIST}/{{member}}/r{{sample}}.nc",
                                  member=MEMBERS, sample=range(1, NSAMPLES + 1))
    return ins


def evaluation_inputs():
    ys = years(EVAL_EXP)
    ins = {
        "reference": expand(f"{OUT}/reference/fine/{{variable}}.nc", variable=VARS),
        "coarse": expand(f"{OUT}/reference/coarse/{{variable}}.nc", variable=VARS),
        "reference_indices": f"{OUT}/indices/reference.nc",
    }
    if config["downscale"]["evaluation_run"]:
        ins["downscaled"] = delivered(REF, EVAL_EXP, EVAL_MEMBER)
        ins["baseline"] = delivered(REF, EVAL_EXP, EVAL_MEMBER, baseline=True)
        ins["checks"] = [f"{OUT}/checks/{REF}/{EVAL_EXP}/{EVAL_MEMBER}/{y}.json" for y in ys]
    ins["gcm_indices"] = expand(
        f"{OUT}/indices/{{source}}/{HIST}/{{member}}/r{{sample}}.nc",
        source=SOURCES,
        member=MEMBERS,
        sample=range(1, NSAMPLES + 1),
    )
    return ins


def signal_targets():
    """Change-signal table and figure of every (source, scenario); the historical run is the base."""
    return [f"{OUT}/signal/{source}_{experiment}.{ext}" for source in SOURCES for experiment in EXPERIMENTS
            if experiment != HIST for ext in ("csv", "png")]


def signal_inputs(wildcards):
    """Raw (regridded), adjusted and downscaled files of the historical run and of the scenario."""
    ins = {}
    for key, exp in (("reference", HIST), ("scenario", wildcards.experiment)):
        ins[f"raw_{key}"] = expand(f"{OUT}/regrid/{wildcards.source}/{exp}/{{member}}/{{variable}}.nc",
                                   member=MEMBERS, variable=VARS)
        ins[f"adjusted_{key}"] = expand(f"{OUT}/adjusted/{wildcards.source}/{exp}/{{member}}.nc", member=MEMBERS)
        ins[f"downscaled_{key}"] = [p for m in MEMBERS for p in delivered(wildcards.source, exp, m)]
    return ins


def join_inputs(wildcards):
    """The yearly files of one multi-year deliverable (rule join_years)."""
    return [
        str(naming.deliverable_paths(config, wildcards.source, wildcards.experiment, wildcards.member, y,
                                     wildcards.stage == "baseline")[(wildcards.variable, int(wildcards.sample))])
        for y in range(int(wildcards.first), int(wildcards.last) + 1)
    ]
