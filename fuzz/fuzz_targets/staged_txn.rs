//! Fuzz target `staged_txn`: see `keel::fuzzing::staged_txn` for what it feeds and what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(init: keel::fuzzing::unwind_caught_panics(), |data: &[u8]| keel::fuzzing::staged_txn(data));
