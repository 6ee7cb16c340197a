#!/usr/bin/env bash
# README command 1: set up, then run the default pipeline end to end on the sample data
# (no GPU, no cluster, no internet) and build the Snakemake report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
snakemake --cores "${AID_CORES:-2}" "$@"
snakemake --cores 1 --report results/report.html
echo "aid: deliverables under results/downscale, indices under results/indices, report: results/report.html"
