#!/usr/bin/env bash
# What checkpoint parity costs: runs Nexmark queries with large state (q9, q20, q4 by default)
# with parity on and off, alternately, and prints each run's CPU seconds (user + system), wall
# seconds, peak RSS, and what the checkpoint store logged of the parity (checkpoints with a
# parity, seconds spent writing them, the largest state and parity in MB). See BENCHMARKS.md.
#
#   scripts/bench-parity.sh            (env: KEEL, EVENTS, INTERVAL, REPEAT, QUERIES, DATA)
set -euo pipefail
cd "$(dirname "$0")/.."
KEEL=${KEEL:-target/release/keel}
EVENTS=${EVENTS:-10000000}
INTERVAL=${INTERVAL:-1s}
REPEAT=${REPEAT:-5}
QUERIES=${QUERIES:-q9 q20 q4}
DATA=${DATA:-/tmp/keel-bench-parity}
if [ ! -x "$KEEL" ]; then
  echo "no keel binary at $KEEL: run 'cargo build --release' first (or set KEEL)" >&2
  exit 1
fi
mkdir -p "$DATA"
for q in $QUERIES; do
  (sed "s/\${EVENTS}/$EVENTS/" nexmark/ddl.sql; cat "nexmark/$q.sql") >"$DATA/$q.sql"
  for i in $(seq 1 "$REPEAT"); do
    for mode in on off; do
      flag=()
      [ "$mode" = off ] && flag=(--no-checkpoint-parity)
      rm -rf "$DATA/data"
      /usr/bin/time -f "%U %S %e %M" -o "$DATA/time.txt" env KEEL_LOG=keel_state=debug,warn \
        "$KEEL" --data-dir "$DATA/data" run "$DATA/$q.sql" --fresh --bounded -p 2 \
        --checkpoint-interval "$INTERVAL" "${flag[@]}" >"$DATA/run.log" 2>&1
      read -r user sys wall rss <"$DATA/time.txt"
      parity=$(python3 - "$DATA/run.log" <<'PY'
import re, sys
unit = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
n, secs, state, par = 0, 0.0, 0, 0
pat = re.compile(r"parity of \d+ state file\(s\), (\d+) bytes in all, written \((\d+) bytes\) in ([0-9.]+)(ns|µs|us|ms|s)\b")
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = pat.search(line)
    if m:
        n += 1
        secs += float(m.group(3)) * unit[m.group(4)]
        state, par = max(state, int(m.group(1))), max(par, int(m.group(2)))
print(f"parity written {n} time(s) in {secs:.2f} s; largest state {state / 1e6:.0f} MB, parity {par / 1e6:.0f} MB")
PY
)
      printf '%s parity %-3s run %d: cpu %.2f s, wall %s s, peak RSS %d MB; %s\n' \
        "$q" "$mode" "$i" "$(echo "$user + $sys" | bc)" "$wall" $((rss / 1024)) "$parity"
    done
  done
done
