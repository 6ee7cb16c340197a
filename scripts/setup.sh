#!/usr/bin/env bash
# Idempotent setup on a fresh Debian/Ubuntu machine with Python >= 3.11:
# a virtual environment in .venv with aid and its pinned dependencies (CPU torch 2.13.0),
# plus the Debian tools the tests compare against (cdo) when we are root and they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.aid-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  # Exact versions of every dependency (constraints.txt): pip's resolver gives up with
  # resolution-too-deep on the open ranges of pyproject.toml, and a lock makes CI reproducible.
  # Regenerate after changing dependencies:
  #   uv pip compile pyproject.toml --extra test --python-version 3.11 --no-header --no-annotate \
  #     --find-links /opt/wheels -o constraints.txt   (then pin torch==2.13.0 without +cpu)
  # torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
  python -m pip install -q -c constraints.txt "torch==2.13.0"
  python -m pip install -q -c constraints.txt -e ".[test]"
  touch "$stamp"
fi
if [ "${AID_SKIP_APT:-0}" != "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  need=()
  command -v cdo >/dev/null || need+=(cdo)                 # regrid check against CDO
  command -v chromium >/dev/null || need+=(chromium)       # report check in a real browser
  [ -x /usr/bin/time ] || need+=(time)                     # peak-memory benchmarks
  if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || \
      echo "setup: could not install ${need[*]} (tests that need them are skipped)" >&2
  fi
fi
