//! Fuzz target `parquet_file`: see `keel::fuzzing::parquet_file` for what it feeds and what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(init: keel::fuzzing::unwind_caught_panics(), |data: &[u8]| keel::fuzzing::parquet_file(data));
