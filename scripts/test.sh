#!/usr/bin/env bash
# README command 2: set up, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
# The pipeline tests share one workflow run across workers (tests/conftest.py `pipeline`, file lock);
# --dist loadgroup keeps each xdist_group (tests/test_slurm.py: one SLURM queue) on one worker.
python -m pytest -n "${AID_TEST_WORKERS:-2}" --dist loadgroup -m "not slow" --durations=15 "$@"
