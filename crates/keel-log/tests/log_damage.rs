//! Damage to acknowledged data is never destroyed: a flipped byte, a corrupted length or a lost
//! segment in the middle of a partition stops readers and writers at that point with an error
//! naming the file and the repair, the file is kept as it is, and `repair_partition` moves the
//! damaged bytes aside and reports exactly which offsets are lost. Only a torn tail (nothing
//! valid after it) is cut automatically. Every case damages a real segment file.

use keel_log::{Durability, Log, LogError, Record, Topic, TopicConfig, TxnOutcome};
use std::path::{Path, PathBuf};

fn rec(v: &str) -> Record {
    Record::new(None, v.as_bytes().to_vec())
}

/// What a reader from offset 0 got: the records, the error that stopped it (if any), and the
/// offsets reported lost.
type ReadOutcome = (Vec<(u64, String)>, Option<LogError>, Vec<(u64, u64)>);

fn read_until_error(topic: &Topic, partition: u32) -> ReadOutcome {
    let mut reader = topic.reader(partition, 0).unwrap();
    let (mut out, mut gaps) = (vec![], vec![]);
    loop {
        match reader.read(1 << 16) {
            Ok(Some(chunk)) => {
                gaps.extend(chunk.gaps());
                chunk.for_each(|r| out.push((r.offset, String::from_utf8(r.value.to_vec()).unwrap()))).unwrap();
            }
            Ok(None) => return (out, None, gaps),
            Err(e) => return (out, Some(e), gaps),
        }
    }
}

fn segments(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("topics/t").join(format!("p-{partition:04}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// 5,000 records in 50 appends of 100: batch `b` holds offsets `100 b .. 100 (b + 1)`.
fn fifty_batches(dir: &Path, config: TopicConfig) -> Topic {
    let topic = Log::open(dir).unwrap().create_topic("t", config).unwrap();
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    for b in 0..50 {
        let recs: Vec<Record> = (0..100).map(|i| rec(&format!("record {}", b * 100 + i))).collect();
        assert_eq!(w.append(&recs).unwrap(), (b * 100, (b + 1) * 100));
    }
    topic
}

/// The byte position where batch `b` of `fifty_batches` starts (all batches are the same size
/// but for the digits: found by walking the frame lengths).
fn batch_position(segment: &[u8], b: usize) -> usize {
    let mut at = 0;
    for _ in 0..b {
        at += 8 + u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
    }
    at
}

#[test]
fn a_flipped_byte_in_the_middle_is_kept_refused_and_repaired_with_the_lost_offsets_named() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fifty_batches(dir.path(), TopicConfig::new(1));
    let seg = segments(dir.path(), 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = batch_position(&bytes, 25) + 40;
    bytes[at] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    // Readers get everything before the damage, then an error naming the file and the repair.
    let (read, err, _) = read_until_error(&topic, 0);
    assert_eq!(read.len(), 2500);
    let err = err.expect("reading past damage must fail");
    let msg = err.to_string();
    assert!(matches!(err, LogError::Damaged { offset: 2500, resume: Some((_, 2600)), .. }), "{msg}");
    assert!(msg.contains(&seg.display().to_string()) && msg.contains("keel topic repair t --partition 0"), "{msg}");
    assert_eq!(err.class(), keel_types::ErrorClass::Damaged);

    // A writer refuses to append, and truncates nothing.
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    let err = w.append(&[rec("new")]).unwrap_err();
    assert!(matches!(err, LogError::Damaged { offset: 2500, .. }), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "the damaged segment must be kept byte for byte");

    // A dry run reports and changes nothing.
    let report = topic.repair_partition(0, true).unwrap();
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].lost_offsets, Some((2500, 2600)));
    assert_eq!(report.damaged[0].kept_in, None);
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);

    // The repair keeps the damaged bytes aside and loses exactly that batch.
    let report = topic.repair_partition(0, false).unwrap();
    assert_eq!(report.lost(), 100);
    let d = &report.damaged[0];
    let kept = std::fs::read(d.kept_in.as_ref().unwrap()).unwrap();
    assert_eq!(kept, bytes[d.from_byte as usize..d.to_byte as usize]);
    assert_eq!(d.from_byte as usize, batch_position(&bytes, 25));
    let (read, err, gaps) = read_until_error(&topic, 0);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(gaps, vec![(2500, 2600)]);
    assert_eq!(read.len(), 4900);
    assert!(read.iter().all(|(o, v)| !(2500..2600).contains(o) && *v == format!("record {o}")));
    // Appends continue at the partition's end, and a second repair finds nothing.
    assert_eq!(w.append(&[rec("new")]).unwrap(), (5000, 5001));
    assert!(topic.repair_partition(0, false).unwrap().damaged.is_empty());
    // A reader that starts inside the gap is moved past it.
    let mut r = topic.reader(0, 2550).unwrap();
    let chunk = r.read(1 << 20).unwrap().unwrap();
    assert_eq!(chunk.gaps(), vec![(2550, 2600)]);
}

#[test]
fn a_corrupted_length_field_is_damage_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fifty_batches(dir.path(), TopicConfig::new(1));
    let seg = segments(dir.path(), 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Batch 10's length now claims more bytes than the file has: it looks like a write in
    // progress, but 40 whole batches follow it.
    let at = batch_position(&bytes, 10);
    bytes[at + 3] = 0x7f;
    std::fs::write(&seg, &bytes).unwrap();
    let (read, err, _) = read_until_error(&topic, 0);
    assert_eq!(read.len(), 1000);
    assert!(matches!(err, Some(LogError::Damaged { offset: 1000, resume: Some((_, 1100)), .. })), "{err:?}");
    let err = topic.writer(0, Durability::Fsync).unwrap().append(&[rec("x")]).unwrap_err();
    assert!(matches!(err, LogError::Damaged { .. }), "{err}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), bytes.len() as u64, "nothing truncated");
    let report = topic.repair_partition(0, false).unwrap();
    assert_eq!(report.damaged[0].lost_offsets, Some((1000, 1100)));
    assert_eq!(read_until_error(&topic, 0).0.len(), 4900);
}

#[test]
fn a_torn_tail_is_cut_and_its_bytes_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fifty_batches(dir.path(), TopicConfig::new(1));
    let seg = segments(dir.path(), 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = batch_position(&bytes, 49);
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    // Nothing valid follows the bad last frame: readers wait at it (an append may be in
    // progress), a writer cuts it, keeping its bytes.
    let (read, err, _) = read_until_error(&topic, 0);
    assert!(err.is_none());
    assert_eq!(read.len(), 4900);
    // The cut frame's offsets may have been read: they go to a gap, never used again.
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.append(&[rec("after")]).unwrap(), (5000, 5001));
    let aside = dir.path().join("topics/t/p-0000/damaged");
    let kept: Vec<_> = std::fs::read_dir(&aside).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert_eq!(kept, vec![bytes[last..].to_vec()]);
    // A write cut short (a frame longer than the file) is cut too, its bytes kept as well.
    drop(w);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .map(|mut f| std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1]))
        .unwrap()
        .unwrap();
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.append(&[rec("again")]).unwrap(), (5001, 5002), "no header, no offsets claimed");
    assert!(std::fs::metadata(&seg).unwrap().len() > len);
    assert_eq!(std::fs::read_dir(&aside).unwrap().count(), 2);
}

#[test]
fn damage_in_a_closed_segment_and_a_missing_segment_are_reported_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TopicConfig::new(1);
    config.segment_bytes = 4096;
    let topic = fifty_batches(dir.path(), config);
    let segs = segments(dir.path(), 0);
    assert!(segs.len() > 5, "{} segments", segs.len());
    // Flip a byte in the second segment and delete the fourth.
    let mut second = std::fs::read(&segs[1]).unwrap();
    second[30] ^= 0xff;
    std::fs::write(&segs[1], &second).unwrap();
    let base = |p: &PathBuf| p.file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap();
    let (b1, b2, b3, b4) = (base(&segs[1]), base(&segs[2]), base(&segs[3]), base(&segs[4]));
    std::fs::remove_file(&segs[3]).unwrap();
    let (read, err, _) = read_until_error(&topic, 0);
    assert_eq!(read.len() as u64, b1);
    assert!(matches!(err, Some(LogError::Damaged { .. })), "{err:?}");
    // Reading from after the first damage stops at the missing segment.
    let mut r = topic.reader(0, b2).unwrap();
    let mut got = 0;
    let err = loop {
        match r.read(1 << 20) {
            Ok(Some(c)) => got += c.len() as u64,
            Ok(None) => panic!("a hole between segments must not look like the end"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, b3 - b2);
    assert!(err.to_string().contains(&format!("next segment starts at offset {b4}")), "{err}");
    let report = topic.repair_partition(0, false).unwrap();
    let lost: Vec<_> = report.damaged.iter().map(|d| d.lost_offsets).collect();
    // The second segment's first batch is lost (up to where its next batch starts), and the
    // deleted segment's offsets.
    assert_eq!(lost.len(), 2, "{report:?}");
    assert_eq!(lost[0].unwrap().0, b1);
    assert_eq!(lost[1], Some((b3, b4)));
    let (read, err, gaps) = read_until_error(&topic, 0);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(read.len() as u64 + report.lost(), 5000);
    assert_eq!(gaps.len(), 2);
}

/// A partition holding transactions 1 (offsets 0..100), 2 (3,000 records of about 500 bytes,
/// several batches: offsets 100..3100) and 3, with one byte flipped in batch `batch` of the
/// segment (0 is transaction 1's), repaired; the directory, the topic and the repair's report.
fn three_transactions_one_batch_flipped(batch: usize) -> (tempfile::TempDir, Topic, keel_log::RepairReport) {
    let dir = tempfile::tempdir().unwrap();
    let topic = Log::open(dir.path()).unwrap().create_topic("t", TopicConfig::new(1)).unwrap();
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    let big: Vec<Record> = (0..3000).map(|i| rec(&format!("{i:0>500}"))).collect();
    w.commit_txn(7, 1, &big[..100]).unwrap();
    assert!(matches!(w.commit_txn(7, 2, &big).unwrap(), TxnOutcome::Committed { base_offset: 100, .. }));
    w.commit_txn(7, 3, &big[..10]).unwrap();
    drop(w);
    let seg = segments(dir.path(), 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = batch_position(&bytes, batch);
    bytes[at + 100] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let report = topic.repair_partition(0, false).unwrap();
    (dir, topic, report)
}

#[test]
fn a_transaction_cut_by_damage_is_removed_whole() {
    // Damage the second batch of transaction 2: its first batch is whole but can never commit.
    let (_dir, topic, report) = three_transactions_one_batch_flipped(2);
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].lost_offsets.unwrap().0, 100, "the whole transaction from its first offset");
    let (read, err, _) = read_until_error(&topic, 0);
    assert!(err.is_none(), "{err:?}");
    let offsets: Vec<u64> = read.iter().map(|r| r.0).collect();
    assert!(offsets[..100].iter().copied().eq(0..100));
    // What survives of transaction 2 after the damage is delivered; the lost range is reported.
    let (from, to) = report.damaged[0].lost_offsets.unwrap();
    assert_eq!(read.len() as u64, 3110 - (to - from));
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.commit_txn(7, 3, &[rec("dup")]).unwrap(), TxnOutcome::AlreadyCommitted);
}

#[test]
fn records_over_the_topic_limit_are_refused_whole_and_the_largest_allowed_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut config = TopicConfig::new(1);
    config.max_message_bytes = 1000;
    let topic = log.create_topic("t", config).unwrap();
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    let ok = Record::new(Some(vec![b'k'; 10]), vec![b'v'; 990]);
    let too_big = Record::new(Some(vec![b'k'; 10]), vec![b'v'; 991]);
    let err = w.append(&[ok.clone(), too_big.clone()]).unwrap_err();
    assert!(matches!(err, LogError::RecordTooLarge { size: 1001, limit: 1000, .. }), "{err}");
    assert!(err.to_string().contains("nothing of this write was stored"), "{err}");
    assert_eq!(w.next_offset().unwrap(), 0, "nothing written");
    let mut chunks = vec![vec![ok.clone()], vec![too_big]].into_iter();
    assert!(w.commit_txn_stream(1, 1, &mut || Ok(chunks.next())).is_err());
    assert_eq!(std::fs::metadata(&segments(dir.path(), 0)[0]).unwrap().len(), 0, "a failed stream is cut back");
    assert_eq!(w.append(&[ok]).unwrap(), (0, 1));
    // The limit is checked when a topic is created and when its metadata is read.
    let mut bad = TopicConfig::new(1);
    bad.max_message_bytes = keel_log::MAX_RECORD_BYTES + 1;
    assert!(matches!(log.create_topic("u", bad), Err(LogError::InvalidConfig(_))));
    // The largest record any topic accepts is read back by the reader (one frame of the reader's
    // maximum size).
    let mut config = TopicConfig::new(1);
    config.max_message_bytes = keel_log::MAX_RECORD_BYTES;
    let huge_topic = log.create_topic("huge", config).unwrap();
    let huge = Record::new(None, vec![7u8; keel_log::MAX_RECORD_BYTES as usize]);
    huge_topic.writer(0, Durability::OsBuffer).unwrap().append(&[huge]).unwrap();
    huge_topic.writer(0, Durability::OsBuffer).unwrap().append(&[rec("next")]).unwrap();
    let mut r = huge_topic.reader(0, 0).unwrap();
    let mut sizes = vec![];
    while let Some(c) = r.read(1 << 20).unwrap() {
        c.for_each(|r| sizes.push(r.value.len() as u64)).unwrap();
    }
    assert_eq!(sizes, vec![keel_log::MAX_RECORD_BYTES, 4]);
}

#[test]
fn hand_edited_topic_metadata_is_refused_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    let meta = dir.path().join("topics/t/topic.json");
    // A digit changed: it still parses, but the checksum tells.
    let text = std::fs::read_to_string(&meta).unwrap().replace("\"partitions\": 2", "\"partitions\": 3");
    std::fs::write(&meta, text).unwrap();
    let err = log.topic("t").unwrap_err();
    assert!(matches!(err, LogError::BadMetadata { .. }), "{err}");
    assert!(err.to_string().contains("checksum does not match"), "{err}");
    // A file without a checksum (Keel 0.1) is read, and an impossible value refused.
    std::fs::write(&meta, br#"{"partitions": 0, "segment_bytes": 1048576}"#).unwrap();
    let err = log.topic("t").unwrap_err();
    assert!(matches!(err, LogError::BadMetadata { .. }), "{err}");
    assert!(err.to_string().contains("between 1 and 4096 partitions"), "{err}");
    std::fs::write(&meta, b"{\"partitions\": ").unwrap();
    assert!(matches!(log.topic("t"), Err(LogError::BadMetadata { .. })));
}

#[test]
fn an_unreadable_producer_table_is_refused_and_rebuilt_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TopicConfig::new(1);
    config.segment_bytes = 1024;
    let topic = Log::open(dir.path()).unwrap().create_topic("t", config).unwrap();
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    for seq in 1..=10 {
        w.commit_txn(3, seq, &[rec(&format!("{seq:0>300}"))]).unwrap();
    }
    drop(w);
    let table = dir.path().join("topics/t/p-0000/producers.json");
    // A digit of a sequence changed would make later commits look like repeats (dropped): the
    // checksum refuses it.
    let text = std::fs::read_to_string(&table).unwrap();
    let changed = text.replacen(": 9", ": 99", 1);
    assert_ne!(changed, text, "{text}");
    std::fs::write(&table, changed).unwrap();
    let err = topic.writer(0, Durability::OsBuffer).unwrap().commit_txn(3, 11, &[rec("next")]).unwrap_err();
    assert!(err.to_string().contains("checksum does not match"), "{err}");
    std::fs::write(&table, b"{ garbled").unwrap();
    let err = topic.writer(0, Durability::OsBuffer).unwrap().commit_txn(3, 10, &[rec("dup")]).unwrap_err();
    assert!(matches!(err, LogError::BadMetadata { .. }), "{err}");
    let report = topic.repair_partition(0, false).unwrap();
    assert!(report.rebuilt_producers && report.damaged.is_empty());
    let mut w = topic.writer(0, Durability::OsBuffer).unwrap();
    for seq in 1..=10 {
        assert_eq!(w.commit_txn(3, seq, &[rec("dup")]).unwrap(), TxnOutcome::AlreadyCommitted, "seq {seq}");
    }
}

#[test]
fn a_second_admin_of_a_topic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::new(2)).unwrap();
    let held = topic.admin_lock("keel topic repair t").unwrap();
    let err = log.delete_topic("t").unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("keel topic repair t"), "{err}");
    drop(held);
    log.delete_topic("t").unwrap();
}

#[test]
fn a_writer_that_cached_the_tail_appends_to_the_repaired_segment_not_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fifty_batches(dir.path(), TopicConfig::new(1));
    // A long-lived writer (a running job's sink) has the tail cached.
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.append(&[rec("record 5000")]).unwrap(), (5000, 5001));
    let seg = segments(dir.path(), 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = batch_position(&bytes, 10) + 30;
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let report = topic.repair_partition(0, false).unwrap();
    assert_eq!(report.lost(), 100);
    // The repair replaced the segment file: the writer must notice and append to the new one.
    assert_eq!(w.append(&[rec("record 5001")]).unwrap(), (5001, 5002));
    let (read, err, gaps) = read_until_error(&topic, 0);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(gaps, vec![(1000, 1100)]);
    assert_eq!(read.last(), Some(&(5001, "record 5001".to_string())));
    assert_eq!(read.len(), 4902);
}

#[test]
fn a_transaction_whose_first_batch_is_damaged_is_removed_whole_and_can_be_committed_again() {
    // The first batch of transaction 2: its later batches and its commit are whole.
    let (_dir, topic, report) = three_transactions_one_batch_flipped(1);
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].lost_offsets, Some((100, 3100)), "the whole transaction, through its commit");
    let (read, err, _) = read_until_error(&topic, 0);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(read.len(), 110);
    // Its commit did not count: the producer's retry (from its staged file) goes through.
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.last_committed(7).unwrap(), Some(3));
    assert!(matches!(w.commit_txn(7, 2, &[rec("a retry")]).unwrap(), TxnOutcome::AlreadyCommitted));
}

#[test]
fn a_cut_tail_leaves_its_offsets_to_a_gap_and_a_waiting_reader_follows_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fifty_batches(dir.path(), TopicConfig::new(1));
    let mut reader = topic.reader(0, 0).unwrap();
    let mut seen = 0;
    while let Some(c) = reader.read(1 << 20).unwrap() {
        seen += c.len();
    }
    assert_eq!(seen, 5000);
    // A flipped bit in the length field of the last, acknowledged frame: it now claims more
    // bytes than the file has, as a write in progress would.
    let seg = segments(dir.path(), 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = batch_position(&bytes, 49);
    bytes[last + 2] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    // A reader that read it before goes on from 5000; the repair cuts the tail and leaves
    // 4900..4999 to a gap, so the next record is 5000, not a new record at 4900.
    let report = topic.repair_partition(0, false).unwrap();
    assert_eq!(report.damaged[0].lost_offsets, Some((4900, 5000)), "{report:?}");
    assert!(report.damaged[0].kept_in.is_some());
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.append(&[rec("after")]).unwrap(), (5000, 5001));
    let chunk = reader.read(1 << 20).unwrap().expect("the reader follows the repaired file");
    let mut got = vec![];
    chunk.for_each(|r| got.push((r.offset, r.value.to_vec()))).unwrap();
    assert_eq!(got, vec![(5000, b"after".to_vec())]);
    // The same when a writer (not a repair) cuts such a tail.
    drop(w);
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    let last = (0..n).rev().find(|&p| {
        p + 8 < n && bytes[p..p + 4] == bytes[p..p + 4] && {
            let len = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
            p + 8 + len == n
        }
    });
    let last = last.expect("the last frame");
    bytes[last + 2] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let mut w = topic.writer(0, Durability::Fsync).unwrap();
    assert_eq!(w.append(&[rec("later")]).unwrap(), (5001, 5002), "offset 5000 is never used again");
}

#[test]
fn a_writer_of_a_deleted_topic_writes_nothing_into_the_topic_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut old = topic.writer(0, Durability::Fsync).unwrap();
    old.append(&[rec("before")]).unwrap();
    log.delete_topic("t").unwrap();
    let again = log.create_topic("t", TopicConfig::new(1)).unwrap();
    let err = old.append(&[rec("stale")]).unwrap_err();
    assert!(matches!(err, LogError::Deleted { .. }), "{err}");
    assert_eq!(err.class(), keel_types::ErrorClass::External);
    again.writer(0, Durability::Fsync).unwrap().append(&[rec("new")]).unwrap();
    assert_eq!(read_until_error(&again, 0).0, vec![(0, "new".to_string())]);
}
