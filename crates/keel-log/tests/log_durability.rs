//! The log's durability and visibility guarantees, tested by damaging real files.

use keel_log::{Durability, Log, LogError, Record, Topic, TopicConfig, TxnOutcome};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

fn rec(v: &str) -> Record {
    Record::new(None, v.as_bytes().to_vec())
}

fn read_all(topic: &Topic, partition: u32, from: u64) -> Vec<(u64, String)> {
    let mut reader = topic.reader(partition, from).unwrap();
    let mut out = vec![];
    while let Some(chunk) = reader.read(1 << 16).unwrap() {
        chunk.for_each(|r| out.push((r.offset, String::from_utf8(r.value.to_vec()).unwrap()))).unwrap();
    }
    out
}

fn segment_files(dir: &std::path::Path, topic: &str, partition: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("topics").join(topic).join(format!("p-{partition:04}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn appends_are_read_back_in_order_from_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::new(2)).unwrap();
    let mut w = topic.writer(1, Durability::Fsync).unwrap();
    assert_eq!(w.append(&[rec("a"), rec("b")]).unwrap(), (0, 2));
    assert_eq!(w.append(&[rec("c")]).unwrap(), (2, 3));
    assert_eq!(read_all(&topic, 1, 0), vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]);
    assert_eq!(read_all(&topic, 1, 1), vec![(1, "b".into()), (2, "c".into())]);
    assert_eq!(read_all(&topic, 1, 3), vec![]);
    assert!(read_all(&topic, 0, 0).is_empty());
    let info = topic.partition_info(1).unwrap();
    assert_eq!((info.start_offset, info.end_offset), (0, 3));
    assert!(matches!(log.create_topic("t", TopicConfig::new(1)), Err(LogError::TopicExists(_))));
    assert!(matches!(log.topic("nope"), Err(LogError::TopicNotFound(_))));
    assert!(matches!(log.create_topic("a/b", TopicConfig::new(1)), Err(LogError::InvalidName { .. })));
}

#[test]
fn a_torn_tail_is_never_served_and_is_truncated_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    w.append(&[rec("one"), rec("two")]).unwrap();
    drop(w);
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A writer that died mid-append: a frame header promising more bytes than exist.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]).unwrap();
    drop(f);
    assert_eq!(read_all(&topic, 0, 0).len(), 2, "the torn frame must not be served");
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.append(&[rec("three")]).unwrap(), (2, 3));
    assert!(std::fs::metadata(&seg).unwrap().len() > good_len);
    assert_eq!(read_all(&topic, 0, 0).iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), vec!["one", "two", "three"]);
}

#[test]
fn a_corrupted_tail_batch_is_truncated_and_corruption_before_good_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    w.append(&[rec("first")]).unwrap();
    let (second_start, _) = w.append(&[rec("second")]).unwrap();
    assert_eq!(second_start, 1);
    drop(w);
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // flip the last byte of "second"
    std::fs::write(&seg, &bytes).unwrap();
    // A reader waits at a damaged last frame (it may be an append in progress).
    assert_eq!(read_all(&topic, 0, 0), vec![(0, "first".to_string())]);
    // A writer cuts it and continues after "first"; the offset the cut frame held may have been
    // read, so it is skipped (a gap), never used for another record.
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.append(&[rec("again")]).unwrap(), (2, 3));
    w.append(&[rec("more")]).unwrap();
    drop(w);
    // Damage in the middle, with good data after it, is reported, not skipped.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[20] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let mut reader = topic.reader(0, 0).unwrap();
    let err = reader.read(1 << 16).err().expect("corruption must be an error");
    assert!(err.to_string().contains("CRC32C mismatch"), "{err}");
}

#[test]
fn transactions_are_invisible_until_committed_and_commits_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    let big: Vec<Record> = (0..3000).map(|i| rec(&format!("{i:0>500}"))).collect();
    assert_eq!(w.commit_txn(7, 1, &big).unwrap(), TxnOutcome::Committed { base_offset: 0, next_offset: 3000 });
    assert_eq!(w.commit_txn(7, 1, &big).unwrap(), TxnOutcome::AlreadyCommitted);
    assert_eq!(w.commit_txn(7, 0, &[rec("old")]).unwrap(), TxnOutcome::AlreadyCommitted);
    assert_eq!(read_all(&topic, 0, 0).len(), 3000);
    drop(w);
    // Simulate a writer that died in the middle of a multi-batch commit: cut the file inside the
    // second transaction's last batch, so its first batches are whole but its commit is missing.
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert!(matches!(w.commit_txn(7, 2, &big).unwrap(), TxnOutcome::Committed { .. }));
    drop(w);
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 100).unwrap();
    assert_eq!(read_all(&topic, 0, 0).len(), 3000, "the uncommitted transaction's whole batches must stay invisible");
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.last_committed(7).unwrap(), Some(1), "the torn commit must not count");
    // The cut transaction's offsets are skipped (a gap): its commit batch may have been whole
    // once, and read, before the damage that looks like a cut write.
    assert!(matches!(
        w.commit_txn(7, 2, &[rec("retry")]).unwrap(),
        TxnOutcome::Committed { base_offset: 6000, next_offset: 6001 }
    ));
    let all = read_all(&topic, 0, 0);
    assert_eq!(all.len(), 3001);
    assert_eq!(all[3000], (6000, "retry".to_string()));
}

#[test]
fn producer_sequences_survive_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut cfg = TopicConfig::new(1);
    cfg.segment_bytes = 4096;
    let topic = log.create_topic("t", cfg).unwrap();
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    for seq in 1..=20u64 {
        let recs: Vec<Record> = (0..10).map(|i| rec(&format!("{seq}-{i}-{:0>60}", 0))).collect();
        assert!(matches!(w.commit_txn(42, seq, &recs).unwrap(), TxnOutcome::Committed { .. }));
    }
    drop(w);
    assert!(segment_files(dir.path(), "t", 0).len() > 3, "expected several segments");
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    for seq in 1..=20u64 {
        assert_eq!(w.commit_txn(42, seq, &[rec("dup")]).unwrap(), TxnOutcome::AlreadyCommitted, "seq {seq}");
    }
    let all = read_all(&topic, 0, 0);
    assert_eq!(all.len(), 200);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as u64));
    assert_eq!(read_all(&topic, 0, 150).first().map(|r| r.0), Some(150));
}

#[test]
fn retention_by_size_deletes_oldest_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut cfg = TopicConfig::new(1);
    cfg.segment_bytes = 2048;
    cfg.retention_bytes = Some(8192);
    let topic = log.create_topic("t", cfg).unwrap();
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    for i in 0..200 {
        w.append(&[rec(&format!("{i:0>100}"))]).unwrap();
    }
    let info = topic.partition_info(0).unwrap();
    assert!(info.size_bytes <= 8192 + 2048 + 200, "size {}", info.size_bytes);
    assert!(info.start_offset > 0);
    assert_eq!(info.end_offset, 200);
    let kept = read_all(&topic, 0, info.start_offset);
    assert_eq!(kept.len() as u64, 200 - info.start_offset);
    match topic.reader(0, 0).unwrap().read(1024) {
        Err(LogError::OffsetOutOfRange { earliest, .. }) => assert_eq!(earliest, info.start_offset),
        other => panic!("expected OffsetOutOfRange, got {:?}", other.map(|c| c.map(|c| c.len()))),
    }
}

#[test]
fn retention_by_age_deletes_closed_segments_older_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut cfg = TopicConfig::new(1);
    cfg.segment_bytes = 1024;
    cfg.retention_ms = Some(60_000);
    let topic = log.create_topic("t", cfg).unwrap();
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    for i in 0..30 {
        w.append(&[rec(&format!("{i:0>100}"))]).unwrap();
    }
    let before = segment_files(dir.path(), "t", 0);
    assert!(before.len() >= 3);
    // Age every closed segment by two minutes, then trigger a roll.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    for p in &before[..before.len() - 1] {
        OpenOptions::new().write(true).open(p).unwrap().set_modified(old).unwrap();
    }
    for i in 0..15 {
        w.append(&[rec(&format!("{i:0>100}"))]).unwrap();
    }
    let after = segment_files(dir.path(), "t", 0);
    for p in &before[..before.len() - 1] {
        assert!(!after.contains(p), "{} should have expired", p.display());
    }
    assert_eq!(topic.partition_info(0).unwrap().end_offset, 45);
}

#[test]
fn a_reader_follows_appends_and_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut cfg = TopicConfig::new(1);
    cfg.segment_bytes = 1024;
    let topic = log.create_topic("t", cfg).unwrap();
    let mut reader = topic.reader(0, 0).unwrap();
    assert!(reader.read(1024).unwrap().is_none());
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    let mut seen = 0u64;
    for round in 0..20 {
        w.append(&[rec(&format!("{round:0>200}")), rec("x")]).unwrap();
        while let Some(chunk) = reader.read(300).unwrap() {
            chunk
                .for_each(|r| {
                    assert_eq!(r.offset, seen);
                    seen += 1;
                })
                .unwrap();
        }
        assert_eq!(seen, 2 * (round + 1));
    }
    assert_eq!(reader.position(), 40);
}

#[test]
fn a_streamed_transaction_is_one_atomic_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    let mut chunks = (0..3).map(|c| (0..2000).map(|i| rec(&format!("{c}-{i:0>600}"))).collect::<Vec<_>>());
    let outcome = w.commit_txn_stream(5, 1, &mut || Ok(chunks.next())).unwrap();
    assert_eq!(outcome, TxnOutcome::Committed { base_offset: 0, next_offset: 6000 });
    let mut again = vec![vec![rec("dup")]].into_iter();
    assert_eq!(w.commit_txn_stream(5, 1, &mut || Ok(again.next())).unwrap(), TxnOutcome::AlreadyCommitted);
    let all = read_all(&topic, 0, 0);
    assert_eq!(all.len(), 6000);
    assert!(all[5999].1.starts_with("2-"));
    // A stream that fails part-way leaves nothing visible, and the next writer truncates it.
    let mut n = 0;
    let err = w.commit_txn_stream(5, 2, &mut || {
        n += 1;
        if n < 3 {
            Ok(Some((0..2000).map(|i| rec(&format!("{i:0>600}"))).collect()))
        } else {
            Err(LogError::InvalidConfig("source broke".into()))
        }
    });
    assert!(err.is_err());
    assert_eq!(read_all(&topic, 0, 0).len(), 6000, "a half-written transaction must stay invisible");
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(
        w.commit_txn(5, 2, &[rec("retry")]).unwrap(),
        TxnOutcome::Committed { base_offset: 6000, next_offset: 6001 }
    );
}
