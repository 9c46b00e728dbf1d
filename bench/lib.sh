# Shared by the bench scripts (sourced, not run).
#
# interleaved_hyperfine NAMES CMDS PREPARES ROUNDS PER_ROUND WARMUP OUT [CLEANUP]
#
# Times every command in ROUNDS rounds of PER_ROUND runs each (hyperfine
# -N), the order of the commands changed every round (rotated, and
# reversed every other round), with a `sync` and a pause of SETTLE seconds (default 1)
# after each command's runs, and merges the
# rounds' JSON into OUT: one hyperfine-style result per command with every
# timing kept (`times`) plus the per-round medians (`round_medians`).
# Why: this VM is shared and its speed drifts (2x within an hour was
# seen); all runs of one tool, then all of the next, would compare
# different machines.
#
# NAMES: name of an array of command names (also the result names).
# CMDS, PREPARES: names of associative arrays, name -> command line; the
# prepare command (untimed, before each run) may be absent for a name
# when PREPARES is empty for all. WARMUP runs apply to the first round.
# Progress goes to stderr.
interleaved_hyperfine() {
  local -n _ih_names=$1 _ih_cmds=$2 _ih_prep=$3
  local rounds=$4 per=$5 warmup=$6 out=$7 cleanup=${8:-}
  local dir n r i t k
  dir=$(mktemp -d /tmp/berth-bench-rounds.XXXXXX)
  n=${#_ih_names[@]}
  for ((r = 0; r < rounds; r++)); do
    local order=() hf=() line=()
    # Shift by r, and reverse every other round: with a plain rotation
    # each command would always follow the same one, and inherit what
    # that one leaves running (podman's cleanup process, for one).
    for ((i = 0; i < n; i++)); do order+=("${_ih_names[$(((i + r) % n))]}"); done
    if ((r % 2 == 1)); then
      local rev=()
      for ((i = n - 1; i >= 0; i--)); do rev+=("${order[$i]}"); done
      order=("${rev[@]}")
    fi
    k=0
    for t in "${order[@]}"; do
      # One hyperfine per command, and a pause between them, so that
      # background work one leaves behind settles before the next.
      hf=(hyperfine -N --style basic --runs "$per" --export-json "$dir/$r-$k.json")
      if [ "$r" = 0 ] && [ "$warmup" -gt 0 ]; then hf+=(--warmup "$warmup"); fi
      if [ ${#_ih_prep[@]} -gt 0 ]; then hf+=(--prepare "${_ih_prep[$t]}"); fi
      [ -z "$cleanup" ] || hf+=(--cleanup "$cleanup")
      hf+=(-n "$t" "${_ih_cmds[$t]}")
      [ "$r" != 0 ] || echo "bench: round 0: ${hf[*]}" >&2
      if ! "${hf[@]}" >"$dir/$r-$k.log" 2>&1; then
        cat "$dir/$r-$k.log" >&2
        echo "bench: hyperfine failed in round $r ($t)" >&2
        rm -rf "$dir"
        return 1
      fi
      line+=("$t $(jq -r '.results[0].median * 100000 | round / 100' "$dir/$r-$k.json") ms")
      k=$((k + 1))
      # Flush what this command left dirty before the next one is timed:
      # otherwise the next fsync (berth's and podman's durable record
      # commits) would write out the previous command's data and journal
      # too, and the order of the commands would decide who pays for it.
      sync
      sleep "${SETTLE:-1}"
    done
    echo "bench: round $((r + 1))/$rounds: $(IFS=,; echo "${line[*]}")" >&2
  done
  jq -s --arg order "$(printf '%s\n' "${_ih_names[@]}")" --argjson per "$per" '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def mean: add / length;
    def stddev: mean as $m | if length > 1 then (map(. - $m | . * .) | add / (length - 1) | sqrt) else null end;
    [.[].results[]] as $all
    | { note: "merged from \(length) hyperfine invocations (\($per) runs of one command each; commands interleaved in rounds, order rotated and reversed every other round, a sync and a pause after each)",
        results: [ $order | split("\n")[] | select(. != "") as $c
          | [$all[] | select(.command == $c)] as $rs
          | ([$rs[].times[]]) as $t
          | { command: $c, mean: ($t | mean), stddev: ($t | stddev), median: ($t | median),
              min: ($t | min), max: ($t | max), times: $t,
              user: ($rs | map(.user) | mean), system: ($rs | map(.system) | mean),
              round_medians: ($rs | map(.median)) } ] }' "$dir"/*.json >"$out"
  rm -rf "$dir"
}

# ------------------------------------------------------ cgroups for crun
# crun 1.8.1 refuses this hybrid host ("cgroups in hybrid mode not
# supported, drop all controllers from cgroupv2", exit 1, nothing run):
# hugetlb sits on the cgroup2 mount and net_cls, net_prio, perf_event are
# mounted nowhere. cgroups_for_crun_setup mounts them as v1 hierarchies,
# as systemd does on hybrid hosts; cgroups_for_crun_restore undoes it.
# Before hugetlb can leave cgroup2 it must be off every cgroup2
# `cgroup.subtree_control` that enables it (berth's v2 manager enables the
# controllers cgroup2 has for its /berth tree); the restore enables it
# there again. Messages go through `note` when the caller defines it.
# State: the arrays cg_mounted, cg_created, cg_disabled.
cg_mounted=()   # v1 hierarchies mounted here
cg_created=()   # mount point dirs made here
cg_disabled=()  # cgroup2 dirs whose subtree_control lost hugetlb

cg_note() { if declare -F note >/dev/null; then note "$1"; else echo "bench: $1" >&2; fi; }
# The v1 hierarchy a controller is bound to (0: none, i.e. cgroup2).
hierarchy_of() { awk -v c="$1" '$1 == c { print $2 }' /proc/cgroups; }
ctrl_mounted() { findmnt -rn -t cgroup -o OPTIONS | tr ',' '\n' | grep -qx "$1"; }

cgroups_for_crun_setup() {
  local spec c need dir made u d try
  [ -d /sys/fs/cgroup ] && [ "$(stat -fc %T /sys/fs/cgroup)" = tmpfs ] || return 0
  u=$(findmnt -rn -t cgroup2 -o TARGET | head -1)
  for spec in hugetlb net_cls,net_prio perf_event; do
    need=
    for c in ${spec//,/ }; do
      grep -qw "^$c" /proc/cgroups || continue
      ctrl_mounted "$c" || need=1
    done
    [ -n "$need" ] || continue
    dir=/sys/fs/cgroup/$spec
    made=
    [ -d "$dir" ] || { mkdir "$dir" && made=1 && cg_created+=("$dir"); }
    # A container cgroup that is still being removed (an engine removes
    # --rm containers in the background) keeps hugetlb busy on cgroup2 for
    # a moment: retry.
    for try in 1 2 3 4 5 6 7 8 9 10; do
      if [ "$spec" = hugetlb ] && [ -n "$u" ]; then
        # Deepest first: a parent cannot drop what a child still enables.
        while read -r d; do
          if grep -qw hugetlb "$d/cgroup.subtree_control" 2>/dev/null \
            && echo -hugetlb >"$d/cgroup.subtree_control" 2>/dev/null; then
            cg_disabled+=("$d")
          fi
        done < <(find "$u" -type d | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
      fi
      mount -t cgroup -o "$spec" cgroup "$dir" 2>/dev/null && break
      sleep 0.5
    done
    if mountpoint -q "$dir"; then
      cg_mounted+=("$dir")
      if [ -n "${KEEP_CGROUP_MOUNTS:-}" ]; then c="kept afterwards"; else c="unmounted afterwards"; fi
      cg_note "mounted cgroup v1 \`$spec\` at $dir for this run ($c)."
    else
      [ -z "$made" ] || rmdir "$dir" 2>/dev/null || true
      cg_note "could not mount cgroup v1 \`$spec\` at $dir."
    fi
  done
}

cgroups_for_crun_restore() {
  local dir i c left spec
  [ -z "${KEEP_CGROUP_MOUNTS:-}" ] || return 0
  if [ ${#cg_mounted[@]} -gt 0 ]; then
    # A v1 hierarchy outlives its umount when it still has (even dying)
    # child cgroups then; hugetlb would then stay off cgroup2. Let removed
    # container cgroups go away first, and retry until every controller is
    # back on the unified hierarchy (hierarchy 0 in /proc/cgroups).
    for i in 1 2 3 4 5; do
      sleep 1
      for dir in "${cg_mounted[@]}"; do
        # Container runtimes leave their (empty) parent cgroups, e.g. berth/.
        find "$dir" -mindepth 1 -type d 2>/dev/null | awk '{ print length($0) " " $0 }' | sort -rn \
          | cut -d' ' -f2- | while read -r c; do rmdir "$c" 2>/dev/null || true; done
      done
      for dir in "${cg_mounted[@]}"; do
        if mountpoint -q "$dir"; then umount "$dir" || echo "bench: umount $dir failed" >&2; fi
      done
      sleep 1
      left=
      for dir in "${cg_mounted[@]}"; do
        spec=${dir##*/}
        for c in ${spec//,/ }; do [ "$(hierarchy_of "$c")" = 0 ] || left="$left $c"; done
      done
      [ -z "$left" ] && break
      echo "bench: controllers still on a detached v1 hierarchy:$left; remounting to release them (try $i)" >&2
      for dir in "${cg_mounted[@]}"; do
        mountpoint -q "$dir" || mount -t cgroup -o "${dir##*/}" cgroup "$dir" || true
      done
    done
    [ -z "$left" ] || echo "bench: WARNING: could not return$left to cgroup2; run: mount -t cgroup -o <ctrl> cgroup /sys/fs/cgroup/<ctrl> && umount it" >&2
  fi
  for dir in "${cg_created[@]}"; do rmdir "$dir" 2>/dev/null || true; done
  # Shallowest first, the reverse of the setup.
  for ((i = ${#cg_disabled[@]} - 1; i >= 0; i--)); do
    echo +hugetlb >"${cg_disabled[$i]}/cgroup.subtree_control" 2>/dev/null || true
  done
  cg_mounted=() cg_created=() cg_disabled=()
}
