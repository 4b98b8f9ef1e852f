//! Fuzz target `sql_plan`: see `keel::fuzzing::sql_plan` for what it feeds and what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(init: keel::fuzzing::unwind_caught_panics(), |data: &[u8]| keel::fuzzing::sql_plan(data));
