#!/usr/bin/env bash
# README command 2: set up, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
# The pipeline tests share one workflow run across workers (tests/conftest.py `pipeline`, file lock);
# tests/conftest.py's scheduler keeps a few modules (ONE_WORKER_MODULES: the SLURM queue, costly
# fixtures) on one worker each.
python -m pytest -n "${AID_TEST_WORKERS:-2}" --dist load -m "not slow" --durations=30 "$@"
