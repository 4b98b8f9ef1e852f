//! Every input the fuzzers kept (`fuzz/corpus/TARGET/`) and every crash or failed property they
//! ever found (`fuzz/regressions/TARGET/`, each fixed since) is replayed through the same target
//! body (`keel::fuzzing`), so a decoder that regresses fails the normal test suite. See
//! `scripts/fuzz.sh` and docs/RELIABILITY.md.

mod common;

#[test]
fn every_kept_fuzz_input_and_every_past_finding_passes() {
    let root = common::manifest_dir().join("fuzz");
    let mut replayed = 0;
    for (name, target) in keel::fuzzing::TARGETS {
        let mut inputs = vec![];
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries {
                inputs.push(e.unwrap().path());
            }
        }
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for fuzz target {name} under {}", root.display());
        for path in inputs {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "fuzz target {name} fails on {}", path.display());
            replayed += 1;
        }
    }
    println!("replayed {replayed} fuzz inputs");
}
