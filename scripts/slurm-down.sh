#!/usr/bin/env bash
# Stop the SLURM daemons that scripts/slurm-up.sh started (and only those): the PIDs it recorded in
# $AID_SLURM_STATE/pids (default /run/aid-slurm). A daemon that was already running before
# slurm-up.sh (e.g. a site munged) is not in that file and is left alone. Idempotent.
set -euo pipefail

STATE=${AID_SLURM_STATE:-/run/aid-slurm}
PIDS=$STATE/pids
log() { echo "slurm-down: $*" >&2; }

if [ ! -s "$PIDS" ]; then
  log "nothing recorded in $PIDS; nothing to stop"
  exit 0
fi

# Reverse start order: slurmd, slurmctld, munged.
mapfile -t lines < <(tac "$PIDS")
for line in "${lines[@]}"; do
  name=${line%% *} pid=${line##* }
  [[ "$pid" =~ ^[0-9]+$ ]] || continue
  # Only signal the process if it is still the daemon we started (PIDs get reused).
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" != "$name" ]; then
    log "$name (pid $pid) is not running"
    continue
  fi
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  log "stopped $name (pid $pid)"
done
rm -f "$PIDS"
