#!/usr/bin/env bash
# Container start-to-exit latency of `berth runtime run`, `crun run` and
# `runc run` on one busybox bundle whose process is `true`, timed with
# hyperfine. Appends a section to bench/RESULTS.md and keeps hyperfine's
# JSON under bench/results/. See bench/README.md.
#
# Usage: bench/runtime-startup.sh            (as root)
# Environment:
#   RUNS=100 WARMUP=5      timed runs / warmup runs per runtime (RUNS >= 50)
#   ROUNDS=10              interleaved rounds the runs are split into
#   RUNTIMES="berth crun runc"
#   NO_BUILD=1             use the existing build of scripts/build-release
#   BERTH=path             the berth binary to time (implies NO_BUILD)
#   KEEP_CGROUP_MOUNTS=1   leave the cgroup v1 controllers this script mounts
#   RESULTS=path           markdown file to append to (default bench/RESULTS.md)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
RUNS=${RUNS:-100}
ROUNDS=${ROUNDS:-10}
WARMUP=${WARMUP:-5}
RUNTIMES=${RUNTIMES:-"berth crun runc"}
RESULTS=${RESULTS:-$here/RESULTS.md}

die() { echo "runtime-startup: $*" >&2; exit 1; }
log() { echo "runtime-startup: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (containers, cgroups, mounts)"
[ "$RUNS" -ge 50 ] || die "RUNS must be at least 50 (got $RUNS)"
for t in hyperfine jq cargo; do
  command -v "$t" >/dev/null || die "$t not found (apt-get install -y hyperfine jq; rustup for cargo)"
done

# ---------------------------------------------------------------- build
# The release binary as shipped: static, built by scripts/build-release.
if [ -z "${NO_BUILD:-}" ] && [ -z "${BERTH:-}" ]; then
  log "building berth (release, static)"
  BERTH=$(bash "$repo/scripts/build-release")
fi
BERTH=${BERTH:-$repo/target/$(rustc -vV | sed -n 's/^host: //p')/release/berth}
[ -x "$BERTH" ] || die "$BERTH missing (build it with scripts/build-release)"

work=$(mktemp -d /tmp/berth-bench.XXXXXX)
bundle=$work/bundle

# Commands per runtime, each with its own state dir.
rt_cmd() {
  case $1 in
    berth) echo "$BERTH runtime --root $work/state-berth" ;;
    crun) echo "crun --root $work/state-crun" ;;
    runc) echo "runc --root $work/state-runc" ;;
    *) die "unknown runtime $1" ;;
  esac
}

cleanup() {
  local r
  for r in $RUNTIMES; do
    $(rt_cmd "$r") delete --force "bench-$r" >/dev/null 2>&1 || true
    $(rt_cmd "$r") delete --force "smoke-$r" >/dev/null 2>&1 || true
  done
  cgroups_for_crun_restore
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------- bundle
log "making the busybox bundle in $bundle"
mkdir -p "$bundle"
"$repo/scripts/mk-busybox-rootfs" "$bundle/rootfs" >/dev/null
(cd "$bundle" && "$BERTH" runtime spec)
spec_version=$(jq -r .ociVersion "$bundle/config.json")
jq '.process.terminal = false | .process.args = ["true"]' "$bundle/config.json" >"$work/c.json"
mv "$work/c.json" "$bundle/config.json"

# Runs one container once; prints its combined output; returns its status.
# A container still known to the runtime after `run` returns is marked in
# $work/left-<runtime> (`run` must delete it, as runc does).
smoke() {
  local r=$1 out rc=0
  out=$(timeout 60 $(rt_cmd "$r") run --bundle "$bundle" "smoke-$r" </dev/null 2>&1) || rc=$?
  if [ $rc = 0 ] && $(rt_cmd "$r") state "smoke-$r" >/dev/null 2>&1; then : >"$work/left-$r"; fi
  $(rt_cmd "$r") delete --force "smoke-$r" >/dev/null 2>&1 || true
  printf '%s' "$out"
  return $rc
}

notes=()
note() { notes+=("$1"); log "$1"; }

# crun 1.8.1 checks ociVersion and cgroup layout before anything else:
# record what it says about the bundle and host as they are.
if [[ " $RUNTIMES " == *" crun "* ]] && command -v crun >/dev/null; then
  if out=$(smoke crun); then
    note "crun ran the bundle as generated (ociVersion $spec_version) on the unmodified host."
  else
    note "crun on the bundle as generated (ociVersion \`$spec_version\`), before any host change: exit $?, \`$(echo "$out" | tr '\n' ' ' | sed 's/ *$//')\`"
  fi
fi
case $spec_version in
  1.0.*) ;;
  *)
    # crun 1.8.1 accepts only 1.0.x ("unknown version specified"); the
    # rest of the config is the same for every runtime.
    jq '.ociVersion = "1.0.2-dev"' "$bundle/config.json" >"$work/c.json"
    mv "$work/c.json" "$bundle/config.json"
    note "ociVersion set from $spec_version to 1.0.2-dev for all runtimes (crun 1.8.1 rejects other versions)."
    if [[ " $RUNTIMES " == *" crun "* ]] && command -v crun >/dev/null; then
      if out=$(smoke crun); then
        note "with ociVersion 1.0.2-dev crun ran on the unmodified host."
      else
        note "crun with ociVersion 1.0.2-dev, before mounting cgroup controllers: exit $?, \`$(echo "$out" | tr '\n' ' ' | sed 's/ *$//')\`"
      fi
    fi
    ;;
esac

# -------------------------------------------------------------- cgroups
# crun refuses this hybrid host as it is (bench/lib.sh).
cgroups_for_crun_setup

# ---------------------------------------------------------------- smoke
ok=()
declare -A err
for r in $RUNTIMES; do
  if [ "$r" != berth ] && ! command -v "$r" >/dev/null; then
    err[$r]="$r not installed (apt-get install -y $r)"
    note "$r: ${err[$r]}; not measured."
    continue
  fi
  if out=$(smoke "$r"); then
    ok+=("$r")
    [ ! -e "$work/left-$r" ] || note "$r: the container still existed after \`run\` returned (run should delete it); the benchmark deletes it untimed."
  else
    rc=$?
    err[$r]="exit $rc: $(echo "$out" | tr '\n' ' ' | sed 's/ *$//')"
    note "$r failed its smoke run, not measured: \`${err[$r]}\`"
  fi
done
[ ${#ok[@]} -gt 0 ] || die "no runtime could run the bundle"

# ------------------------------------------------------------ hyperfine
# Interleaved rounds (bench/lib.sh): every runtime timed in each round.
stamp=$(date -u +%Y%m%dT%H%M%SZ)
load=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$here/results"
json=$here/results/runtime-startup-$stamp.json
per_round=$(((RUNS + ROUNDS - 1) / ROUNDS))
declare -A run_cmd prep_cmd
cleanup_cmd=
for r in "${ok[@]}"; do
  rt=$(rt_cmd "$r")
  run_cmd[$r]="$rt run --bundle $bundle bench-$r"
  # Each timed run reuses the id: delete any leftover first (untimed).
  prep_cmd[$r]="sh -c '$rt delete --force bench-$r >/dev/null 2>&1 || true'"
  cleanup_cmd="$cleanup_cmd $rt delete --force bench-$r >/dev/null 2>&1;"
done
interleaved_hyperfine ok run_cmd prep_cmd "$ROUNDS" "$per_round" "$WARMUP" "$json" "sh -c '$cleanup_cmd true'" ||
  die "hyperfine failed"
RUNS=$((per_round * ROUNDS))

for r in "${ok[@]}"; do
  left=$(find "$work/state-$r" -mindepth 1 -maxdepth 1 2>/dev/null | tr '\n' ' ')
  [ -z "$left" ] || note "$r left entries in its state dir after the benchmark: $left"
done

# -------------------------------------------------------------- results
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
ver() { "$@" 2>&1 | head -n 1 || true; }
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$repo" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]; then rev="$rev + uncommitted changes"; fi
cg=$(stat -fc %T /sys/fs/cgroup)
[ "$cg" = cgroup2fs ] && cg="cgroup v2" || cg="cgroup v1 ($cg at /sys/fs/cgroup)"

{
  [ -s "$RESULTS" ] || printf '# berth benchmark results\n\nAppended by the scripts in bench/ (see bench/README.md).\n'
  echo
  echo "## runtime-startup — $(date -u +'%Y-%m-%d %H:%M:%S UTC')"
  echo
  echo "Time from exec of \`<runtime> run --bundle B <id>\` to its exit, for a busybox"
  echo "bundle running \`true\` (terminal false, pid/net/ipc/uts/mount/cgroup namespaces,"
  echo "as generated by \`berth runtime spec\`). hyperfine, ${RUNS} runs per runtime in ${ROUNDS} interleaved rounds (order rotated"
  echo "and reversed every other round, a pause after each runtime, ${WARMUP} warmup runs in the first), no shell (\`-N\`);"
  echo "each runtime has its own \`--root\`; the id is deleted (untimed) before each run."
  echo
  echo "- Machine: $(nproc) CPUs, $cpu, $mem RAM, kernel $(uname -r), $cg"
  echo "- Load average when the run started: $load"
  echo "- berth: $(ver "$BERTH" --version) (static release build from scripts/build-release, commit $rev)"
  command -v crun >/dev/null && echo "- crun: $(crun --version 2>&1 | head -n 1 | sed 's/crun version //')"
  command -v runc >/dev/null && echo "- runc: $(runc --version 2>&1 | head -n 1 | sed 's/runc version //')"
  echo "- hyperfine: $(ver hyperfine --version | sed 's/hyperfine //')"
  echo
  echo "| runtime | mean ± σ (ms) | median (ms) | min (ms) | max (ms) | median vs berth |"
  echo "|---|---:|---:|---:|---:|---:|"
  jq -r '
    def ms: . * 1000;
    def f2: (. * 100 | round) as $n
      | "\(($n / 100) | floor).\($n % 100 | tostring | if length < 2 then "0" + . else . end)";
    (.results | map(select(.command == "berth")) | first | .median) as $b
    | .results[]
    | [ .command,
        "\(.mean | ms | f2) ± \(.stddev | ms | f2)",
        (.median | ms | f2),
        (.min | ms | f2),
        (.max | ms | f2),
        (if $b then (.median / $b | f2) + "×" else "–" end) ]
    | "| " + join(" | ") + " |"' "$json"
  for r in $RUNTIMES; do
    [ -z "${err[$r]:-}" ] || echo "| $r | not measured: see notes | | | | |"
  done
  echo
  echo "Raw data: [results/${json##*/}](results/${json##*/})"
  if [ ${#notes[@]} -gt 0 ]; then
    echo
    echo "Notes:"
    for n in "${notes[@]}"; do echo "- $n"; done
  fi
} >>"$RESULTS"

log "results appended to $RESULTS; raw JSON in $json"
