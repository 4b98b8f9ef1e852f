//! The bodies of Keel's fuzz targets (`fuzz/fuzz_targets/`, run with `cargo fuzz`, see
//! `scripts/fuzz.sh`), kept in the library so that the normal test suite replays every corpus
//! input and every crash ever found (`tests/fuzz_regressions.rs`).
//!
//! Each function takes arbitrary bytes, feeds them to one decoder the way Keel meets such bytes
//! (a segment file, JSON records, lines of a CSV or JSON-lines file, a SQL pipeline, a
//! checkpoint's manifest, completion record and state), and checks what that decoder promises:
//! it never panics, never aborts, and answers with a result or an error; where a stronger
//! property holds it is asserted too (a repaired partition reads back without damage, every
//! record decodes to a row or is reported bad, a restored checkpoint's files match its
//! manifest). A failed assertion is a finding, like a crash.
//!
//! Scratch files go under `/dev/shm` when it exists (a fuzzer runs thousands of inputs a second)
//! and are removed after each input.

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("keel-fuzz-{what}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("invariant: the fuzzer's scratch directory can be created");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a partition from offset 0 to its end or first error; the offsets delivered.
fn read_partition(topic: &keel_log::Topic) -> (Vec<u64>, Option<keel_log::LogError>) {
    let mut offsets = vec![];
    let Ok(mut reader) = topic.reader(0, 0) else { return (offsets, None) };
    loop {
        match reader.read(1 << 20) {
            Ok(Some(chunk)) => {
                if let Err(e) = chunk.for_each(|r| offsets.push(r.offset)) {
                    return (offsets, Some(e));
                }
            }
            Ok(None) => return (offsets, None),
            Err(e) => return (offsets, Some(e)),
        }
    }
}

/// A segment file of arbitrary bytes: reading it never panics and serves increasing offsets;
/// `keel topic repair` always succeeds on it, after which it reads to the end without damage,
/// a second repair finds nothing, and an append works.
pub fn segment(data: &[u8]) {
    let scratch = Scratch::new("segment");
    let log = keel_log::Log::open(&scratch.0).expect("invariant: a fresh log opens");
    let topic = log.create_topic("f", keel_log::TopicConfig::new(1)).expect("invariant: a topic is created");
    let seg = scratch.0.join("topics/f/p-0000/00000000000000000000.log");
    std::fs::write(&seg, data).expect("invariant: the scratch segment is written");
    let (offsets, _) = read_partition(&topic);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets served out of order: {offsets:?}");
    let report = topic.repair_partition(0, false).expect("repair of any segment succeeds");
    let (after, err) = read_partition(&topic);
    assert!(err.is_none(), "a repaired partition still fails: {err:?} (report {report:?})");
    assert!(after.windows(2).all(|w| w[0] < w[1]));
    let again = topic.repair_partition(0, false).expect("a second repair succeeds");
    assert!(again.damaged.is_empty(), "a second repair found damage: {again:?}");
    let mut w = topic.writer(0, keel_log::Durability::OsBuffer).expect("invariant: a writer opens");
    w.append(&[keel_log::Record::new(None, b"{}".to_vec())]).expect("an append after a repair succeeds");
}

/// The table schema the decoders are fuzzed with: every column type a JSON or CSV table has.
fn table_schema(nested: bool) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("s", DataType::Utf8, true),
        Field::new("i", DataType::Int64, true),
        Field::new("n", DataType::Int32, true),
        Field::new("d", DataType::Float64, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("dec", DataType::Decimal128(10, 2), true),
    ];
    if nested {
        let inner = Fields::from(vec![Field::new("x", DataType::Int64, true), Field::new("y", DataType::Utf8, true)]);
        fields.push(Field::new("r", DataType::Struct(inner), true));
    }
    Arc::new(Schema::new(fields))
}

/// JSON records (one per line of the input): each becomes exactly one row or is reported bad.
pub fn json_records(data: &[u8]) {
    let records: Vec<&[u8]> = data.split(|&b| b == b'\n').take(64).collect();
    let mut decoder =
        keel_connectors::json::JsonDecoder::new(table_schema(true)).expect("invariant: the schema is supported");
    let decoded = decoder.decode(&records).expect("decoding never fails as a whole");
    assert_eq!(decoded.rows.len() + decoded.bad.len(), records.len(), "a record was neither a row nor bad");
    assert_eq!(decoded.batch.num_rows(), decoded.rows.len());
}

/// A JSON-lines or CSV file (first byte even: CSV) read by the filesystem source to its end,
/// bad lines skipped: never panics, and every row has the table's schema.
pub fn file_lines(data: &[u8]) {
    use keel_connectors::file_source::FileSourceFormat;
    let Some((&first, body)) = data.split_first() else { return };
    if first % 2 == 0 {
        read_file(body, "input.csv", FileSourceFormat::Csv { delimiter: b',' }, table_schema(false));
    } else {
        read_file(body, "input.jsonl", FileSourceFormat::JsonLines, table_schema(true));
    }
}

/// A Parquet file read by the filesystem source: rows of the table's schema, or an error naming
/// the file; never a panic (a malformed file would otherwise crash-loop the job).
pub fn parquet_file(data: &[u8]) {
    let schema = table_schema(false);
    read_file(data, "input.parquet", keel_connectors::file_source::FileSourceFormat::Parquet, schema);
}

/// Reads `body` as one file of the filesystem source to its end or first error.
fn read_file(body: &[u8], name: &str, format: keel_connectors::file_source::FileSourceFormat, schema: Arc<Schema>) {
    use keel_runtime::{Source, SourcePoll};
    let scratch = Scratch::new("file");
    let file = scratch.0.join(name);
    std::fs::write(&file, body).expect("invariant: the scratch file is written");
    let config = keel_connectors::file_source::FileSourceConfig {
        table: "t".into(),
        path: file,
        format,
        schema: schema.clone(),
        event_time: Some((5, 1000)),
        files: Some(vec![String::new()]),
        monitor_interval: None,
        bad_records: keel_connectors::BadRecordPolicy::Skip,
        uid: "fuzz".into(),
    };
    let mut source = keel_connectors::file_source::FileSource::new(config);
    source
        .open(&task_context(&scratch.0), keel_runtime::RestoredState::default())
        .expect("invariant: the source opens");
    for _ in 0..10_000 {
        match source.poll() {
            Ok(SourcePoll::Batch(b)) => assert_eq!(b.schema(), schema, "a row of another schema"),
            Ok(SourcePoll::Pending) => {}
            Ok(SourcePoll::Exhausted) | Err(_) => return,
        }
    }
    panic!("the source did not reach the end of a {}-byte file in 10,000 polls", body.len());
}

/// The context of subtask 0 of 1 of a job in `dir`.
fn task_context(dir: &Path) -> keel_runtime::TaskContext {
    keel_runtime::TaskContext {
        job: "fuzz".into(),
        stage: "s".into(),
        subtask: 0,
        parallelism: 1,
        key_groups: 128,
        data_dir: dir.to_path_buf(),
        job_dir: dir.join("job"),
        run_id: "r".into(),
        attempt: 0,
        metrics: Arc::new(keel_runtime::Metrics::default()),
    }
}

/// A staged sink transaction file of arbitrary bytes (the first byte chooses the format: even,
/// the checksummed `.stage2`; odd, Keel 0.1's `.stage`) committed by recovery: the records go to
/// the topic, or (damaged) nothing does and the file is kept; never a panic.
pub fn staged_txn(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else { return };
    let suffix = if first % 2 == 0 { "stage2" } else { "stage" };
    let scratch = Scratch::new("staged");
    let log = keel_log::Log::open(&scratch.0).expect("invariant: a fresh log opens");
    let topic = log.create_topic("out", keel_log::TopicConfig::new(1)).expect("invariant: a topic is created");
    let stage = scratch.0.join("job/staging/sink/0");
    std::fs::create_dir_all(&stage).expect("invariant: the staging directory is made");
    let file = stage.join(format!("txn-{:020}-p0.{suffix}", 1));
    std::fs::write(&file, data).expect("invariant: the staged file is written");
    let opened = keel_connectors::staging::StagedTopicWriter::open(
        topic.clone(),
        &scratch.0.join("job"),
        "sink",
        "r",
        0,
        1,
        Some(1),
    );
    let committed = topic.partition_info(0).expect("invariant: the partition is described").end_offset;
    match opened {
        Ok(_) => assert!(!file.exists(), "a committed staged file is deleted"),
        Err(e) => {
            assert_eq!(committed, 0, "a staged file that failed was partly committed: {e}");
            assert!(file.exists(), "a damaged staged file must be kept: {e}");
        }
    }
}

/// A topic's metadata files of arbitrary bytes (`topic.json`, then `producers.json`, as
/// length-prefixed pieces): opening the topic and appending either work or fail with an error.
pub fn topic_metadata(data: &[u8]) {
    let scratch = Scratch::new("metadata");
    let log = keel_log::Log::open(&scratch.0).expect("invariant: a fresh log opens");
    log.create_topic("t", keel_log::TopicConfig::new(2)).expect("invariant: a topic is created");
    let dir = scratch.0.join("topics/t");
    for (piece, target) in pieces(data, 2).into_iter().zip([dir.join("topic.json"), dir.join("p-0000/producers.json")])
    {
        std::fs::write(target, piece).expect("invariant: the scratch file is written");
    }
    let Ok(topic) = log.topic("t") else { return };
    assert!(topic.partitions() >= 1, "a topic with no partitions was opened");
    if let Ok(mut w) = topic.writer(0, keel_log::Durability::OsBuffer) {
        let _ = w.commit_txn(1, 1, &[keel_log::Record::new(None, b"{}".to_vec())]);
    }
}

/// A SQL pipeline (the bytes as UTF-8, lossily) planned, never run: an answer or an error.
pub fn sql_plan(data: &[u8]) {
    let sql = String::from_utf8_lossy(data);
    let scratch = Scratch::new("sql");
    let opts = keel_sql::PipelineOptions {
        job: "fuzz".into(),
        data_dir: scratch.0.clone(),
        parallelism: 2,
        bounded: true,
        udfs: vec![],
        udafs: vec![],
    };
    if let Ok(pipeline) = keel_sql::plan(&sql, &opts) {
        let _ = pipeline.explain();
    }
}

/// Splits `data` into up to `n` pieces, each prefixed by its length (two bytes).
fn pieces(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = vec![];
    while out.len() < n && data.len() >= 2 {
        let len = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        out.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    out
}

/// A checkpoint directory whose manifest, completion record slot and state file are the input's
/// pieces (an intact checkpoint written first, then overwritten piece by piece): recovery never
/// panics, and a checkpoint it restores has files that match its manifest.
pub fn checkpoint(data: &[u8]) {
    let scratch = Scratch::new("checkpoint");
    let store = keel_state::CheckpointStore::open(&scratch.0, 3).expect("invariant: the store opens");
    let mut w = store.writer(1).expect("invariant: a checkpoint writer opens");
    w.put("s.0", b"state zero").expect("invariant: a state file is written");
    w.put("s.1", b"the other state").expect("invariant: a state file is written");
    w.commit(serde_json::json!({})).expect("invariant: the checkpoint completes");
    let chk = scratch.0.join("chk-0000000001");
    let targets = [chk.join("_manifest.json"), scratch.0.join("_completed.1"), chk.join("s.0"), chk.join("_parity")];
    for (piece, target) in pieces(data, targets.len()).into_iter().zip(&targets) {
        std::fs::write(target, piece).expect("invariant: the scratch file is written");
    }
    for choice in [keel_state::Choice::Newest, keel_state::Choice::Accept(1)] {
        if let Ok(recovery) = store.recover(choice)
            && let Some(c) = recovery.checkpoint
        {
            for f in &c.manifest.files {
                let bytes = c.read(&f.name).expect("a restored checkpoint's files are readable");
                assert_eq!(bytes.len() as u64, f.size, "{} restored with the wrong size", f.name);
                assert_eq!(crc32c::crc32c(&bytes), f.crc32c, "{} restored with the wrong CRC", f.name);
            }
        }
    }
}

/// A state file's bytes decoded as Keel decodes Arrow IPC state: batches or an error.
pub fn state_ipc(data: &[u8]) {
    if let Ok(batches) = keel_state::batches_from_ipc(data, "fuzz") {
        for b in batches.take(1000) {
            let _ = b.map(|b| b.num_rows());
        }
    }
    let _ = keel_state::batch_from_ipc(data, "fuzz");
}

/// Called once by every fuzz target before its first input: puts back the default panic hook.
/// libfuzzer-sys installs one that aborts on every panic, caught or not, so a third-party
/// decoder's panic that `keel_types::guard::no_panic` turns into an error would be reported as
/// a crash and stop the run. A panic that escapes a target still aborts it: libfuzzer-sys
/// catches the unwind at the input's boundary and aborts there, which the fuzzer reports.
pub fn unwind_caught_panics() {
    let _ = std::panic::take_hook();
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name, for the regression test and the fuzz script.
pub const TARGETS: &[(&str, Target)] = &[
    ("segment", segment),
    ("json_records", json_records),
    ("file_lines", file_lines),
    ("parquet_file", parquet_file),
    ("staged_txn", staged_txn),
    ("topic_metadata", topic_metadata),
    ("sql_plan", sql_plan),
    ("checkpoint", checkpoint),
    ("state_ipc", state_ipc),
];
