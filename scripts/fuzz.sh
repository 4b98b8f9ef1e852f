#!/usr/bin/env bash
# Runs Keel's fuzz targets (fuzz/fuzz_targets/, bodies in src/fuzzing.rs) with cargo fuzz, each
# for a fixed time budget, then minimizes each corpus. Not part of CI: the normal test suite
# replays the kept corpora and past findings instead (tests/fuzz_regressions.rs).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     (default 300 s, every target)
#
# cargo-fuzz is installed into a cache outside the clone ($KEEL_TOOLS, default
# ~/.cache/keel-tools) and the instrumented build goes to $KEEL_FUZZ_TARGET (default
# ~/.cache/keel-fuzz-target): a machine builds them once. The machine's stable toolchain runs
# libFuzzer builds with RUSTC_BOOTSTRAP=1 (cargo fuzz passes nightly-only flags). A crash or a
# failed property is saved by libFuzzer under fuzz/artifacts/TARGET/; once fixed, move it to
# fuzz/regressions/TARGET/ so the suite replays it. The figures go to docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(segment topic_metadata staged_txn json_records file_lines parquet_file sql_plan checkpoint state_ipc)
fi
tools=${KEEL_TOOLS:-$HOME/.cache/keel-tools}
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  echo "== installing cargo-fuzz into $tools"
  cargo install cargo-fuzz --root "$tools"
fi
scripts/fuzz-seeds.sh
export PATH="$tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${KEEL_FUZZ_TARGET:-$HOME/.cache/keel-fuzz-target}
echo "== building the fuzz targets (no sanitizer: Keel's own code is safe Rust; debug assertions on, so invariants are checked)"
cargo fuzz build --sanitizer none --debug-assertions
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${budget}s"
  log="fuzz/logs/$t.log"
  mkdir -p fuzz/logs "fuzz/artifacts/$t"
  dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=("-dict=fuzz/dicts/$t.dict")
  set +e
  cargo fuzz run --sanitizer none --debug-assertions "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$budget" -timeout=20 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    "${dict[@]}" >"$log" 2>&1
  status=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  findings=$(find "fuzz/artifacts/$t" -type f | wc -l)
  echo "== minimizing the corpus of $t"
  cargo fuzz cmin --sanitizer none --debug-assertions "$t" "fuzz/corpus/$t" >>"$log" 2>&1 || true
  kept=$(find "fuzz/corpus/$t" -type f | wc -l)
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$budget" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$kept" \
    "$findings$([ "$status" -ne 0 ] && echo " (exit $status, see $log)")" | tee -a "$summary"
done
echo
echo "| target | seconds | executions | coverage (edges) | features | corpus kept | findings |"
echo "|---|---|---|---|---|---|---|"
cat "$summary"
