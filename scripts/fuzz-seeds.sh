#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/TARGET/) that are still empty, from files already in the
# repository: segment fixtures, golden-case pipelines and inputs, Nexmark queries, state
# fixtures. Run by scripts/fuzz.sh; the corpora kept after fuzzing are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
seed() { # TARGET NAME: standard input becomes fuzz/corpus/TARGET/NAME
  mkdir -p "fuzz/corpus/$1"
  cat >"fuzz/corpus/$1/$2"
}
empty() { [ -z "$(ls -A "fuzz/corpus/$1" 2>/dev/null)" ]; }

if empty segment; then
  n=0
  for f in crates/keel-log/tests/fixtures/v1/topics/*/p-*/*.log; do
    n=$((n + 1))
    seed segment "fixture-$n" <"$f"
  done
fi

if empty json_records; then
  n=0
  for f in tests/golden/*.case; do
    n=$((n + 1))
    awk '/^-- input/{on=1; next} /^-- /{on=0} on' "$f" | head -20 | seed json_records "golden-$n"
    [ "$n" -ge 12 ] && break
  done
  printf '{"s":"x","i":1,"n":2,"d":1.5,"b":true,"ts":"2024-01-01T00:00:00Z","dec":"1.25","r":{"x":1,"y":"z"}}\n{"ts":1704067200000}\nnot json\n[1,2]\n{"r":{"x":"no"}}\n' |
    seed json_records typed
fi

if empty file_lines; then
  printf '\001{"s":"a","i":1,"ts":"2024-01-01 00:00:01"}\n\n{"s":"b","r":{"x":2}}\r\n{bad\n{"s":"c"}' | seed file_lines jsonl
  printf '\000a,1,2,1.5,true,2024-01-01T00:00:00Z,1.25\nb,,,,,,\n"q,uoted",3,4,2.5,false,1704067200000,3\nshort\n' |
    seed file_lines csv
fi

if empty sql_plan; then
  n=0
  for f in tests/golden/*.case; do
    n=$((n + 1))
    awk '/^-- pipeline/{on=1; next} /^-- /{on=0} on' "$f" | seed sql_plan "golden-$n"
  done
  for q in nexmark/q*.sql; do
    cat nexmark/ddl.sql "$q" | sed 's/\${EVENTS}/1000/g' | seed sql_plan "nexmark-$(basename "$q" .sql)"
  done
fi

if empty checkpoint; then
  # The target overwrites an intact checkpoint piece by piece: two length bytes, then the bytes.
  printf '' | seed checkpoint intact
  printf '\003\000{ }' | seed checkpoint manifest-garbled
  printf '\000\000\010\000KEELCMP1' | seed checkpoint record-header-only
  printf '\000\000\000\000\004\000zero' | seed checkpoint state-flipped
fi

if empty state_ipc; then
  for f in crates/keel-runtime/tests/fixtures/*.arrow; do
    seed state_ipc "$(basename "$f")" <"$f"
  done
fi

# Binary formats Keel writes itself (Parquet, staged transactions, topic metadata) are seeded by
# Keel's own writers.
if empty parquet_file || empty staged_txn || empty topic_metadata; then
  cargo test --test fuzz_regressions -- --ignored write_binary_seed_corpus
fi
