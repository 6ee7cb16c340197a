#!/usr/bin/env bash
# Start a real single-node SLURM cluster (Debian packages: slurmctld, slurmd, slurm-client, munge)
# on this machine, for CI and for trying `snakemake --profile slurm` locally. Idempotent.
#
#   sudo bash scripts/slurm-up.sh          # install (if needed), configure, start, wait for idle
#   sudo bash scripts/slurm-down.sh        # stop exactly the daemons this script started
#
# What it sets up (docs/SLURM.md has the why):
#   - node `localhost` (NodeAddr=127.0.0.1; slurmd runs with -N localhost because the hostname is
#     not `localhost`), CPUs=nproc, RealMemory=detected minus a margin, one GPU GRES (gpu:1) backed
#     by a character device (/dev/nvidia0 when there is one, else a stand-in), partition `main`;
#   - no slurmdbd: AccountingStorageType=accounting_storage/none, so `sacct` does not work and the
#     Snakemake profile must query job status with squeue (slurm/config.yaml does);
#   - MinJobAge=3600 so finished jobs stay visible to `squeue --states=all`/`scontrol show job`;
#   - ProctrackType=proctrack/linuxproc and TaskPlugin=task/affinity: no cgroups needed.
# PIDs of the daemons it started go to $AID_SLURM_STATE/pids (default /run/aid-slurm).
# Environment: AID_SLURM_FORCE=1 overwrites an /etc/slurm/slurm.conf this script did not write.
set -euo pipefail

STATE=${AID_SLURM_STATE:-/run/aid-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
GRES=$CONF_DIR/gres.conf
MARK="# written by aid scripts/slurm-up.sh"
NODE=localhost
LOG_DIR=/var/log/slurm

log() { echo "slurm-up: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = "0" ] || die "must run as root (it installs packages and starts system daemons)"

# ------------------------------------------------------------------------------------------------
# 0. Already up (ours or a previous run)? Then there is nothing to do.
node_state() { sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1 | tr -d '*~#$@ '; }
if command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q UP; then
  st=$(node_state || true)
  if [[ "$st" =~ ^(idle|mix|alloc)$ ]]; then
    log "SLURM already up (node $NODE: $st)"
    sinfo
    exit 0
  fi
fi

# ------------------------------------------------------------------------------------------------
# 1. Packages (idempotent).
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge; do
  bin=${pair%%:*} pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get"
  log "installing ${need[*]}"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null
fi
export PATH=/usr/sbin:/sbin:$PATH

mkdir -p "$STATE"
PIDS=$STATE/pids
touch "$PIDS"
record() { echo "$1 $2" >>"$PIDS"; log "started $1 (pid $2)"; }

# ------------------------------------------------------------------------------------------------
# 2. munge: the key from the package (create one if missing), munged as the munge user.
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running (not started by this script; left alone)"
else
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  record munged "$(cat /run/munge/munged.pid)"
  munge -n </dev/null | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
fi

# ------------------------------------------------------------------------------------------------
# 3. slurm.conf + gres.conf.
CPUS=$(nproc)
total_mb=$(free -m | awk '/^Mem:/ {print $2}')
margin=$(( total_mb / 20 > 512 ? total_mb / 20 : 512 ))   # 5 %, at least 512 MB for the OS
REALMEM=$(( total_mb - margin ))
[ "$REALMEM" -gt 256 ] || REALMEM=256

# One GPU GRES. gres.conf needs a character device per GPU: the real one when present, else a
# stand-in (a node of our own, /dev/null's major/minor; /dev/null itself when mknod is refused).
if [ -c /dev/nvidia0 ]; then
  GPU_DEV=/dev/nvidia0
else
  GPU_DEV=/dev/aid-fake-gpu0
  if [ ! -c "$GPU_DEV" ]; then
    mknod -m 0666 "$GPU_DEV" c 1 3 2>/dev/null || GPU_DEV=/dev/null
  fi
fi

mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
chown slurm:slurm "$LOG_DIR" /var/spool/slurmctld

tmp=$(mktemp)
cat >"$tmp" <<EOF
$MARK -- single-node test cluster, see docs/SLURM.md
ClusterName=aid
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups needed (containers): track processes via /proc, bind CPUs with sched_setaffinity.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Memory is a consumable resource: a job without --mem would otherwise get the whole node.
DefMemPerCPU=1024
GresTypes=gpu
# No slurmdbd: sacct is unavailable; Snakemake polls squeue (slurm-status-command: squeue).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Keep finished job records for an hour: squeue --states=all / scontrol show job still see them.
MinJobAge=3600
InactiveLimit=0
KillWait=30
Waittime=0
SlurmctldTimeout=120
SlurmdTimeout=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REALMEM Gres=gpu:1 State=UNKNOWN
PartitionName=main Default=YES Nodes=$NODE MaxTime=INFINITE State=UP
EOF
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF" && [ "${AID_SLURM_FORCE:-0}" != "1" ]; then
  rm -f "$tmp"
  die "$CONF exists and was not written by this script (a site configuration?); set AID_SLURM_FORCE=1 to replace it"
fi
install -m 0644 "$tmp" "$CONF"
printf '%s\nNodeName=%s Name=gpu File=%s\n' "$MARK" "$NODE" "$GPU_DEV" >"$tmp"
install -m 0644 "$tmp" "$GRES"
rm -f "$tmp"
log "wrote $CONF (CPUs=$CPUS RealMemory=$REALMEM Gres=gpu:1 on $GPU_DEV)"

# ------------------------------------------------------------------------------------------------
# 4. Daemons. A daemon already running from an earlier start is reconfigured, not restarted.
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running /run/slurmctld.pid; then
  log "slurmctld already running (pid $(cat /run/slurmctld.pid))"
else
  rm -f /run/slurmctld.pid
  slurmctld
  for _ in $(seq 100); do running /run/slurmctld.pid && break; sleep 0.1; done
  running /run/slurmctld.pid || die "slurmctld did not start: $(tail -5 $LOG_DIR/slurmctld.log 2>/dev/null)"
  record slurmctld "$(cat /run/slurmctld.pid)"
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || die "slurmctld does not answer: $(tail -5 $LOG_DIR/slurmctld.log)"

if running /run/slurmd.pid; then
  log "slurmd already running (pid $(cat /run/slurmd.pid))"
  scontrol reconfigure || true
else
  rm -f /run/slurmd.pid
  slurmd -N "$NODE"
  for _ in $(seq 100); do running /run/slurmd.pid && break; sleep 0.1; done
  running /run/slurmd.pid || die "slurmd did not start: $(tail -5 $LOG_DIR/slurmd.log 2>/dev/null)"
  record slurmd "$(cat /run/slurmd.pid)"
fi

# ------------------------------------------------------------------------------------------------
# 5. Wait for the node to be idle (resume it if an earlier state left it down/drained).
for i in $(seq 120); do
  st=$(node_state || true)
  case "$st" in
    idle|mix|alloc) break ;;
    down|drain|drng|fail) [ $((i % 10)) = 1 ] && scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.5
done
st=$(node_state || true)
[[ "$st" =~ ^(idle|mix|alloc)$ ]] || {
  scontrol show node "$NODE" >&2 || true
  tail -20 "$LOG_DIR/slurmd.log" >&2 || true
  die "node $NODE is '$st', not idle"
}
log "up: node $NODE $st"
sinfo -o "%P %a %l %D %t %N %c %m %G"
