//! A topic's acknowledged records survive damage and oversized input, as a user meets them on
//! the command line: a flipped byte in the middle of a segment is refused by `consume` and by
//! the next `produce` (which truncates nothing), `keel topic repair` moves the damaged bytes
//! aside and names the lost offsets, and a line longer than the topic accepts is refused at the
//! door with nothing written, never accepted and lost on the next open.

mod common;
use common::*;
use std::process::Stdio;

fn produce(data: &std::path::Path, topic: &str, input: &[u8]) -> std::process::Output {
    produce_input(data, &[topic], input)
}

fn consume(data: &std::path::Path, topic: &str) -> std::process::Output {
    keel(data).args(["consume", topic]).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn a_flipped_byte_mid_segment_destroys_nothing_and_repair_names_the_lost_offsets() {
    let seed = seed("topic_damage");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "t"]));
    // 5,000 records in five produce calls: five batches of 1,000 records each.
    for call in 0..5 {
        let input: String = (0..1000).map(|i| format!("{{\"n\":{}}}\n", call * 1000 + i)).collect();
        assert!(produce(d, "t", input.as_bytes()).status.success());
    }
    let seg = d.join("topics/t/p-0000/00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    // A byte inside the second or third batch, chosen by the seed.
    let at = bytes.len() / 5 + rng.below(bytes.len() as u64 / 5) as usize;
    bytes[at] ^= 1 << rng.below(8);
    std::fs::write(&seg, &bytes).unwrap();

    let out = consume(d, "t");
    assert!(!out.status.success(), "consume must refuse to read past the damage");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&seg.display().to_string()) && err.contains("keel topic repair t --partition 0"), "{err}");
    let served = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(served == 1000 || served == 2000, "the batches before the damage are served: {served}");

    let out = produce(d, "t", b"{\"n\":5000}\n");
    assert!(!out.status.success(), "produce must refuse a damaged partition rather than truncate it");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was truncated") && err.contains("keel topic repair"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "the segment is kept byte for byte");

    let dry = run_ok(keel(d).args(["topic", "repair", "t", "--dry-run"]));
    let report = String::from_utf8_lossy(&dry.stdout);
    let lost = format!("offsets {served}..{} lost (1000 record(s))", served + 999);
    assert!(report.contains(&lost) && report.contains("dry run"), "{report}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);

    let fixed = run_ok(keel(d).args(["topic", "repair", "t"]));
    let report = String::from_utf8_lossy(&fixed.stdout);
    assert!(report.contains(&lost) && report.contains("the bytes are kept in"), "{report}");
    assert!(std::fs::read_dir(d.join("topics/t/p-0000/damaged")).unwrap().count() == 1);

    assert!(produce(d, "t", b"{\"n\":5000}\n").status.success());
    let out = consume(d, "t");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let values: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (0..5001).filter(|n| !(served as i64..served as i64 + 1000).contains(n)).collect();
    assert_eq!(values, expected);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("offsets {served}..{} were lost", served + 999)));
}

#[test]
fn a_line_longer_than_the_topic_accepts_is_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "t"]));
    // 270 MB on one line, after two good lines: refused without being read whole.
    let mut input = b"{\"n\":1}\n{\"n\":2}\n{\"big\":\"".to_vec();
    input.resize(input.len() + (270 << 20), b'x');
    input.extend_from_slice(b"\"}\n{\"n\":3}\n");
    let out = produce(d, "t", &input);
    drop(input);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3 is longer than topic 't' accepts (1048576 bytes, its max-message-bytes)")
            && err.contains("the 2 record(s) before it were written"),
        "{err}"
    );
    // What was acknowledged stays readable after the next open and append.
    assert!(produce(d, "t", b"{\"n\":4}\n").status.success());
    let out = consume(d, "t");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"n\":1}\n{\"n\":2}\n{\"n\":4}\n");
    // A topic created for larger records takes them, and reads them back.
    run_ok(keel(d).args(["topic", "create", "big", "--max-message-bytes", "4000000"]));
    let mut line = b"{\"big\":\"".to_vec();
    line.resize(3_000_000, b'y');
    line.extend_from_slice(b"\"}\n");
    assert!(produce(d, "big", &line).status.success());
    assert_eq!(consume(d, "big").stdout.len(), line.len());
    let out = keel(d).args(["topic", "create", "huge", "--max-message-bytes", "300000000"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-message-bytes 300000000 is not between 1 and"));
}
