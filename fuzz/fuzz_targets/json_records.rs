//! Fuzz target `json_records`: see `keel::fuzzing::json_records` for what it feeds and what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(init: keel::fuzzing::unwind_caught_panics(), |data: &[u8]| keel::fuzzing::json_records(data));
