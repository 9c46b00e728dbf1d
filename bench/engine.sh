#!/usr/bin/env bash
# The engine against its peers on this machine:
#  1. `run --rm busybox true`, client to exit: berth's own CLI and the
#     docker CLI against `berth serve`, `crun run` of the same rootfs raw, `podman run --rm`,
#     and `docker run --rm` against dockerd when one can be started here.
#  2. 50 idle containers (`sleep`): private memory (PSS) per container of
#     berth's monitors vs podman's conmon, and the daemon's RSS idle and
#     with 50 containers.
# Appends a section to bench/RESULTS.md, hyperfine JSON to bench/results/.
#
# Usage: bench/engine.sh   (as root)
# Environment: RUNS=30 ROUNDS=5 WARMUP=3 IDLE=50 NO_BUILD=1 BERTH=path RESULTS=path
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
RUNS=${RUNS:-30}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-3}
IDLE=${IDLE:-50}
RESULTS=${RESULTS:-$here/RESULTS.md}
die() { echo "engine-bench: $*" >&2; exit 1; }
log() { echo "engine-bench: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root"
# The daemon is started here; the clients (berth's CLI, the docker CLI)
# are timed.
for t in hyperfine jq docker crun; do command -v "$t" >/dev/null || die "$t not found (scripts/setup)"; done

# The release binary as shipped: static, built by scripts/build-release
# (BERTH=path times another build; NO_BUILD=1 reuses the last one).
if [ -z "${NO_BUILD:-}" ] && [ -z "${BERTH:-}" ]; then BERTH=$(bash "$repo/scripts/build-release"); fi
BERTH=${BERTH:-$repo/target/$(rustc -vV | sed -n 's/^host: //p')/release/berth}
[ -x "$BERTH" ] || die "$BERTH missing (build it with scripts/build-release)"

work=$(mktemp -d /tmp/berth-engine-bench.XXXXXX)
# Every tool's state (berth's roots, crun's, podman's and dockerd's) lives
# on a fresh ext4 (mkfs defaults, with a journal) on a sparse loop file,
# as in image-pull.sh. This VM's root fs is an ext4 without a journal,
# where each new inode skips every inode freed in the last 60 s (ext4
# ialloc.c recently_deleted()): over thousands of container starts every
# tool slowed round after round, most the one that writes the most files
# per container (bench/README.md).
img=""
if [ -z "${NO_LOOP:-}" ] && command -v mkfs.ext4 >/dev/null; then
  img=$(mktemp /var/tmp/berth-engine-bench.XXXXXX)
  truncate -s 20G "$img"
  mkfs.ext4 -q -F "$img"
  mount -o loop "$img" "$work" || die "cannot loop-mount an ext4 on $work (NO_LOOP=1 to use $work's filesystem)"
  fs_desc="a fresh ext4 on a loop device (mkfs.ext4 defaults, journal on)"
else
  fs_desc="$(findmnt -no FSTYPE --target "$work") $(findmnt -no SOURCE --target "$work")"
fi
daemon=""
cleanup() {
  set +e
  if [ -n "$daemon" ]; then
    DOCKER_HOST=unix://$work/berth.sock docker rm -f $(DOCKER_HOST=unix://$work/berth.sock docker ps -aq) >/dev/null 2>&1
    kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null
  fi
  pkill -f "monitor --root $work/root" 2>/dev/null
  if [ -s "$work/dockerd/docker.pid" ]; then
    DOCKER_HOST=unix://$work/dockerd/docker.sock docker rm -f $(DOCKER_HOST=unix://$work/dockerd/docker.sock docker ps -aq) >/dev/null 2>&1
    for f in "$work/dockerd/docker.pid" "$work/dockerd/exec/containerd/containerd.pid"; do
      [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    sleep 2
  fi
  if [ -x "$work/podman.sh" ]; then
    "$work/podman.sh" rm -af -t 0 >/dev/null 2>&1
    "$work/podman.sh" system reset -f >/dev/null 2>&1
  fi
  for m in $(findmnt -rn -o TARGET | grep "^$work" | sort -r); do umount -l "$m"; done
  rm -rf "$work"
  [ -z "$img" ] || rm -f "$img"
  cgroups_for_crun_restore
}
trap cleanup EXIT

# ---------------------------------------------------------------- image
log "building the busybox image"
"$repo/scripts/mk-busybox-rootfs" "$work/rootfs" >/dev/null
tar -C "$work/rootfs" -czf "$work/busybox.tar.gz" .
"$BERTH" --root "$work/root" import -c 'CMD ["sh"]' "$work/busybox.tar.gz" busybox:latest >/dev/null

"$BERTH" serve --root "$work/root" --run-root "$work/run" -H "unix://$work/berth.sock" 2>"$work/serve.log" &
daemon=$!
for _ in $(seq 200); do [ -S "$work/berth.sock" ] && break; sleep 0.05; done
export DOCKER_HOST=unix://$work/berth.sock
docker run --rm busybox true || die "berth cannot run a container: $(cat "$work/serve.log")"
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
daemon_idle_kib=$(rss "$daemon")

# crun on the same rootfs.
mkdir -p "$work/bundle"
cp -a "$work/rootfs" "$work/bundle/rootfs"
(cd "$work/bundle" && crun spec >/dev/null)
jq '.process.terminal=false | .process.args=["true"]' "$work/bundle/config.json" >"$work/c.json" && mv "$work/c.json" "$work/bundle/config.json"
# crun refuses this hybrid host as it is (bench/lib.sh); a failing crun
# exits in a few ms having run nothing, so check it ran before timing it.
cg_notes=()
note() { cg_notes+=("$1"); log "$1"; }
cgroups_for_crun_setup
out=$(crun --root "$work/crun-state" run --bundle "$work/bundle" smoke 2>&1) \
  || die "crun cannot run the bundle here: $out"

# podman (its default runtime, crun) with the same image, isolated under
# $work/podman, default ulimits within the host's hard limits (HOST.md).
podman_ok=""
pd=$work/podman
mkdir -p "$pd/tmp"
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 1024 ] && nofile=1024
# podman 4.3 raises RLIMIT_NPROC too, which this host refuses (no
# CAP_SYS_RESOURCE); 1024 is what it allows.
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=1024:1024"]\nnetns = "none"\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' "$nofile" "$nofile" >"$pd/containers.conf"
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$pd/storage" "$pd/run" >"$pd/storage.conf"
cat >"$work/podman.sh" <<WRAP
#!/bin/sh
exec env CONTAINERS_CONF=$pd/containers.conf CONTAINERS_STORAGE_CONF=$pd/storage.conf TMPDIR=$pd/tmp \\
  podman --root $pd/storage --runroot $pd/run --tmpdir $pd/tmp --storage-driver overlay --cgroup-manager=cgroupfs --events-backend=file "\$@"
WRAP
chmod +x "$work/podman.sh"
# berth saves the image; podman and docker load it (the interop tests check this).
"$BERTH" --root "$work/root" save -o "$work/busybox-save.tar" busybox:latest || die "berth save failed"
if command -v podman >/dev/null; then
  if "$work/podman.sh" load -q -i "$work/busybox-save.tar" >/dev/null 2>&1 &&
     "$work/podman.sh" run --rm busybox true >/dev/null 2>&1; then
    podman_ok=1
  else
    log "podman could not run the image; not measured"
  fi
fi

# docker (dockerd + containerd + runc, docker.io's defaults), when dockerd
# is installed: a private daemon on its own data root and socket, without
# bridge or iptables (nothing outside $work changes); containers run with
# --network none, as berth's here have a private namespace with lo only.
docker_ok=""
dd=$work/dockerd
dsock=unix://$dd/docker.sock
if command -v dockerd >/dev/null; then
  mkdir -p "$dd"
  echo '{}' >"$dd/daemon.json"
  setsid dockerd --config-file "$dd/daemon.json" --data-root "$dd/data" --exec-root "$dd/exec" -H "$dsock" \
    --pidfile "$dd/docker.pid" --bridge=none --iptables=false --ip-masq=false --userland-proxy=false \
    --storage-driver overlay2 --log-level warn >"$dd/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 300); do docker -H "$dsock" version >/dev/null 2>&1 && break; sleep 0.1; done
  if docker -H "$dsock" load -q -i "$work/busybox-save.tar" >/dev/null 2>&1 &&
     docker -H "$dsock" run --rm --network none busybox true >/dev/null 2>&1; then
    docker_ok=1
  else
    log "dockerd could not run the image; not measured: $(tail -2 "$dd/dockerd.log")"
  fi
fi

# ---------------------------------------------------------------- latency
load_start=$(cut -d" " -f1-3 /proc/loadavg)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
json=$here/results/engine-run-$stamp.json
mkdir -p "$here/results"
declare -A cmd
names=("berth run --rm (berth CLI → berth serve)" "berth (docker CLI → berth serve)" "crun run (raw)")
cmd["berth run --rm (berth CLI → berth serve)"]="$BERTH -H unix://$work/berth.sock run --rm busybox true"
cmd["berth (docker CLI → berth serve)"]="docker run --rm busybox true"
cmd["crun run (raw)"]="crun --root $work/crun-state run --bundle $work/bundle bench"
if [ -n "$podman_ok" ]; then
  names+=("podman run --rm")
  cmd["podman run --rm"]="$work/podman.sh run --rm busybox true"
fi
if [ -n "$docker_ok" ]; then
  names+=("docker run --rm (dockerd)")
  cmd["docker run --rm (dockerd)"]="docker -H $dsock run --rm --network none busybox true"
fi
# Interleaved rounds (bench/lib.sh): every command timed in each round.
declare -A no_prepare=()
per_round=$(((RUNS + ROUNDS - 1) / ROUNDS))
log "timing run --rm true ($RUNS runs each in $ROUNDS interleaved rounds)"
interleaved_hyperfine names cmd no_prepare "$ROUNDS" "$per_round" "$WARMUP" "$json" || die "hyperfine failed"
RUNS=$((per_round * ROUNDS))

# ---------------------------------------------------------------- memory
log "starting $IDLE idle containers"
for i in $(seq "$IDLE"); do docker run -d --name "idle$i" busybox sleep 100000 >/dev/null; done
sleep 1
# The monitors of the containers, not the idle zygote (a monitor started
# ahead for the next container, one per daemon: reported on its own).
mons=""; zygote_pss="none"
for p in $(pgrep -f -- " monitor .*--root $work/root" || true); do
  if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- ' --zygote '; then zygote_pss="$(pss "$p") KiB"; else mons="$mons $p"; fi
done
n=$(echo "$mons" | wc -w)
total_pss=0
for p in $mons; do total_pss=$((total_pss + $(pss "$p"))); done
per_monitor=$((total_pss / (n > 0 ? n : 1)))
daemon_busy_kib=$(rss "$daemon")
docker rm -f $(docker ps -aq) >/dev/null

conmon_pss="not measured"
if [ -n "$podman_ok" ]; then
  for i in $(seq 10); do "$work/podman.sh" run -d busybox sleep 100000 >/dev/null; done
  sleep 1
  cps=$(pgrep -x conmon | head -10)
  t=0; c=0
  for p in $cps; do t=$((t + $(pss "$p"))); c=$((c + 1)); done
  [ "$c" -gt 0 ] && conmon_pss="$((t / c)) KiB (mean of $c)"
  "$work/podman.sh" rm -af -t 0 >/dev/null 2>&1 || true
fi

shim_pss="not measured"
if [ -n "$docker_ok" ]; then
  for i in $(seq 10); do docker -H "$dsock" run -d --network none busybox sleep 100000 >/dev/null; done
  sleep 1
  sps=$(pgrep -f containerd-shim | head -10)
  t=0; c=0
  for p in $sps; do t=$((t + $(pss "$p"))); c=$((c + 1)); done
  [ "$c" -gt 0 ] && shim_pss="$((t / c)) KiB (mean of $c)"
  docker -H "$dsock" rm -f $(docker -H "$dsock" ps -aq) >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------- report
row() { jq -r --arg n "$1" '.results[] | select(.command == $n) |
  "| \(.command) | \(.median*1000|.*100|round/100) | \(.mean*1000|.*100|round/100) ± \(.stddev*1000|.*100|round/100) | \(.min*1000|.*100|round/100) | \(.max*1000|.*100|round/100) |"' "$json"; }
median() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median' "$json"; }
berth_med=$(median "berth run --rm (berth CLI → berth serve)")
docker_cli_med=$(median "berth (docker CLI → berth serve)")
docker_cli_ratio=$(awk -v a="$docker_cli_med" -v b="$(median "crun run (raw)")" 'BEGIN { printf "%.2f", a / b }')
crun_med=$(median "crun run (raw)")
ratio=$(awk -v a="$berth_med" -v b="$crun_med" 'BEGIN { printf "%.2f", a / b }')
docker_line="docker run was not measured (dockerd missing or could not run the image)."
if [ -n "$docker_ok" ]; then
  docker_med=$(median "docker run --rm (dockerd)")
  docker_line="docker (dockerd → containerd → runc) / berth CLI = $(awk -v a="$docker_med" -v b="$berth_med" 'BEGIN { printf "%.1f", a / b }')× (target ≥ 10×)."
fi
{
  echo
  echo "## engine — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
  echo "Machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)."
  echo "Versions: berth $(cd "$repo" && git rev-parse --short HEAD) (static release build), $(docker version -f 'docker CLI {{.Client.Version}}' 2>/dev/null), $(crun --version | head -1)$( [ -n "$podman_ok" ] && echo ", $(podman --version)")."
  echo "Load average at the start: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Every tool's state on $fs_desc."
  for cg_n in "${cg_notes[@]}"; do echo "- $cg_n"; done
  echo
  echo "### run --rm busybox true, client to exit ($RUNS runs each in $ROUNDS interleaved rounds, hyperfine)"
  echo
  echo "| command | median ms | mean ± σ ms | min | max |"
  echo "|---|---|---|---|---|"
  row "berth run --rm (berth CLI → berth serve)"
  row "berth (docker CLI → berth serve)"
  row "crun run (raw)"
  [ -n "$podman_ok" ] && row "podman run --rm"
  [ -n "$docker_ok" ] && row "docker run --rm (dockerd)"
  echo
  echo "berth CLI / crun raw = ${ratio}× (target ≤ 1.5×); docker CLI → berth / crun raw = ${docker_cli_ratio}×. Both berth rows include the client's start-up and its API round trips (create, attach, wait, start). $docker_line"
  echo
  echo "### memory with $IDLE idle containers"
  echo
  echo "| what | value | target |"
  echo "|---|---|---|"
  echo "| berth monitor PSS per container | ${per_monitor} KiB (mean of $n) | ≤ 1024 KiB |"
  echo "| berth idle zygote PSS (one per daemon, the next container's monitor) | ${zygote_pss} | |"
  echo "| podman conmon PSS per container | $conmon_pss | |"
  echo "| docker containerd-shim PSS per container | $shim_pss | |"
  echo "| berth serve RSS idle | ${daemon_idle_kib} KiB | ≤ 20 MiB |"
  echo "| berth serve RSS with $IDLE containers | ${daemon_busy_kib} KiB | |"
  echo
  echo "Raw: \`bench/results/$(basename "$json")\`."
} >>"$RESULTS"
log "results appended to $RESULTS"
