#!/usr/bin/env bash
# README command 2: set up, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
# --dist loadgroup: the pipeline tests share one workflow run on one worker (xdist_group "pipeline").
python -m pytest -n "${AID_TEST_WORKERS:-2}" --dist loadgroup -m "not slow" --durations=15 "$@"
