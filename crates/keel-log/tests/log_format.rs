//! The on-disk format is pinned: a topic written by Keel 0.1 (checked in under
//! `tests/fixtures/`) must keep opening, reading, and accepting appends and idempotent commits.
//! Regenerate the fixture only for a deliberate format change, with `KEEL_WRITE_FIXTURES=1`.

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
    if std::env::var("KEEL_WRITE_FIXTURES").is_ok() {
        let _ = std::fs::remove_dir_all(fixture_dir());
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
        let _ = std::fs::remove_file(fixture_dir().join("topics/fixture/p-0000/.lock"));
        let _ = std::fs::remove_file(fixture_dir().join("topics/fixture/p-0001/.lock"));
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

/// This package's directory: the value cargo sets when it runs the test (the compile-time value
/// can name another checkout that shared the build cache).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
