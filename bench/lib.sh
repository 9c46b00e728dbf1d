# Shared by the bench scripts (sourced, not run).
#
# interleaved_hyperfine NAMES CMDS PREPARES ROUNDS PER_ROUND WARMUP OUT [CLEANUP]
#
# Times every command in ROUNDS rounds of PER_ROUND runs each (hyperfine
# -N), the order of the commands rotated every round, and merges the
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
  local dir n r i t
  dir=$(mktemp -d /tmp/berth-bench-rounds.XXXXXX)
  n=${#_ih_names[@]}
  for ((r = 0; r < rounds; r++)); do
    local order=() hf=()
    for ((i = 0; i < n; i++)); do order+=("${_ih_names[$(((i + r) % n))]}"); done
    hf=(hyperfine -N --style basic --runs "$per" --export-json "$dir/$r.json")
    if [ "$r" = 0 ] && [ "$warmup" -gt 0 ]; then hf+=(--warmup "$warmup"); fi
    if [ ${#_ih_prep[@]} -gt 0 ]; then
      for t in "${order[@]}"; do hf+=(--prepare "${_ih_prep[$t]}"); done
    fi
    [ -z "$cleanup" ] || hf+=(--cleanup "$cleanup")
    for t in "${order[@]}"; do hf+=(-n "$t" "${_ih_cmds[$t]}"); done
    [ "$r" != 0 ] || echo "bench: round 0: ${hf[*]}" >&2
    if ! "${hf[@]}" >"$dir/$r.log" 2>&1; then
      cat "$dir/$r.log" >&2
      echo "bench: hyperfine failed in round $r" >&2
      rm -rf "$dir"
      return 1
    fi
    echo "bench: round $((r + 1))/$rounds: $(jq -r '[.results[] | "\(.command) \(.median * 100000 | round / 100) ms"] | join(", ")' "$dir/$r.json")" >&2
  done
  jq -s --arg order "$(printf '%s\n' "${_ih_names[@]}")" --argjson per "$per" '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def mean: add / length;
    def stddev: mean as $m | if length > 1 then (map(. - $m | . * .) | add / (length - 1) | sqrt) else null end;
    [.[].results[]] as $all
    | { note: "merged from \(length) hyperfine invocations (rounds) of \($per) runs per command, order rotated each round",
        results: [ $order | split("\n")[] | select(. != "") as $c
          | [$all[] | select(.command == $c)] as $rs
          | ([$rs[].times[]]) as $t
          | { command: $c, mean: ($t | mean), stddev: ($t | stddev), median: ($t | median),
              min: ($t | min), max: ($t | max), times: $t,
              user: ($rs | map(.user) | mean), system: ($rs | map(.system) | mean),
              round_medians: ($rs | map(.median)) } ] }' "$dir"/*.json >"$out"
  rm -rf "$dir"
}
