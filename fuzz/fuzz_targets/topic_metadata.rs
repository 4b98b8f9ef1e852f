//! Fuzz target `topic_metadata`: see `keel::fuzzing::topic_metadata` for what it feeds and what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(init: keel::fuzzing::unwind_caught_panics(), |data: &[u8]| keel::fuzzing::topic_metadata(data));
