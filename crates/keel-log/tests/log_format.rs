//! The on-disk format is pinned: a topic written by Keel 0.1 (checked in under
//! `tests/fixtures/`) must keep opening, reading, and accepting appends and idempotent commits.
//! `KEEL_WRITE_FIXTURES=1` writes a fixture that is missing (delete one only for a deliberate
//! format change); `repaired/` pins a partition `keel topic repair` rewrote, with a gap batch.

use keel_log::{Durability, Log, Record, TopicConfig, TxnOutcome};
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures/v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_topic_written_by_version_1_still_opens_reads_and_appends() {
    // Each fixture is written only where it is missing: the ones checked in pin older versions.
    if std::env::var("KEEL_WRITE_FIXTURES").is_ok() && !fixture_dir().join("topics/fixture").exists() {
        let log = Log::open(&fixture_dir()).unwrap();
        let t = log.create_topic("fixture", TopicConfig::new(2)).unwrap();
        t.writer(0, Durability::Fsync)
            .unwrap()
            .append(&[
                Record::new(Some(b"k1".to_vec()), b"{\"a\":1}".to_vec()),
                Record::new(None, b"{\"a\":2}".to_vec()),
                Record::new(None, Vec::new()),
            ])
            .unwrap();
        t.writer(1, Durability::Fsync)
            .unwrap()
            .commit_txn(9, 4, &[Record::new(None, b"x".to_vec()), Record::new(None, b"y".to_vec())])
            .unwrap();
        for lock in ["fixture/p-0000/.lock", "fixture/p-0001/.lock"] {
            let _ = std::fs::remove_file(fixture_dir().join("topics").join(lock));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    let log = Log::open(dir.path()).unwrap();
    let t = log.topic("fixture").unwrap();
    assert_eq!(t.partitions(), 2);
    let mut got = vec![];
    let mut r = t.reader(0, 0).unwrap();
    while let Some(c) = r.read(1024).unwrap() {
        c.for_each(|rec| got.push((rec.offset, rec.key.map(<[u8]>::to_vec), rec.value.to_vec()))).unwrap();
    }
    assert_eq!(
        got,
        vec![(0, Some(b"k1".to_vec()), b"{\"a\":1}".to_vec()), (1, None, b"{\"a\":2}".to_vec()), (2, None, vec![])]
    );
    let mut w = t.writer(1, Durability::Fsync).unwrap();
    assert_eq!(w.commit_txn(9, 4, &[Record::new(None, b"dup".to_vec())]).unwrap(), TxnOutcome::AlreadyCommitted);
    assert_eq!(w.append(&[Record::new(None, b"z".to_vec())]).unwrap(), (2, 3));
    let mut vals = vec![];
    let mut r = t.reader(1, 0).unwrap();
    while let Some(c) = r.read(1024).unwrap() {
        c.for_each(|rec| vals.push(rec.value.to_vec())).unwrap();
    }
    assert_eq!(vals, vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]);
}

/// A topic that `keel topic repair` rewrote: offsets 3 and 4 were damaged and are now a gap
/// batch (format version 1, flag bit 2).
fn write_repaired_fixture(log: &Log) {
    let t = log.create_topic("repaired", TopicConfig::new(1)).unwrap();
    let mut w = t.writer(0, Durability::Fsync).unwrap();
    let rec = |v: &str| Record::new(None, v.as_bytes().to_vec());
    w.append(&[rec("a"), rec("b"), rec("c")]).unwrap();
    w.append(&[rec("d"), rec("e")]).unwrap();
    w.append(&[rec("f"), rec("g")]).unwrap();
    let seg = fixture_dir().join("topics/repaired/p-0000/00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let second = 8 + u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    bytes[second + 20] ^= 1;
    std::fs::write(&seg, bytes).unwrap();
    let report = t.repair_partition(0, false).unwrap();
    assert_eq!(report.lost(), 2);
}

#[test]
fn a_repaired_topic_with_a_gap_still_opens_reads_and_appends() {
    if std::env::var("KEEL_WRITE_FIXTURES").is_ok() && !fixture_dir().join("topics/repaired").exists() {
        write_repaired_fixture(&Log::open(&fixture_dir()).unwrap());
        for lock in ["repaired/p-0000/.lock", "repaired/.admin.lock"] {
            let _ = std::fs::remove_file(fixture_dir().join("topics").join(lock));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    let t = Log::open(dir.path()).unwrap().topic("repaired").unwrap();
    let (mut got, mut gaps) = (vec![], vec![]);
    let mut r = t.reader(0, 0).unwrap();
    while let Some(c) = r.read(1024).unwrap() {
        gaps.extend(c.gaps());
        c.for_each(|rec| got.push((rec.offset, String::from_utf8(rec.value.to_vec()).unwrap()))).unwrap();
    }
    let expected: Vec<(u64, String)> =
        [(0, "a"), (1, "b"), (2, "c"), (5, "f"), (6, "g")].into_iter().map(|(o, v)| (o, v.to_string())).collect();
    assert_eq!(got, expected);
    assert_eq!(gaps, vec![(3, 5)]);
    assert_eq!(t.partition_info(0).unwrap().end_offset, 7);
    assert!(t.repair_partition(0, false).unwrap().damaged.is_empty(), "a repaired partition is intact");
    assert_eq!(t.writer(0, Durability::Fsync).unwrap().append(&[Record::new(None, b"h".to_vec())]).unwrap(), (7, 8));
}

/// This package's directory: the value cargo sets when it runs the test (the compile-time value
/// can name another checkout that shared the build cache).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
