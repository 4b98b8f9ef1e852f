//! The filesystem source with `'format' = 'parquet'`: files written here with the parquet
//! crate (several row groups, several codecs) read through SQL pipelines, with output equal to
//! the input; a restore from a checkpoint taken in the middle of a file after a SIGKILL, at
//! another parallelism, without loss or duplicates; and a column that does not fit the table
//! failing the job with the file, column and types named.

mod common;
use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use common::*;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

type Event = (String, i64, i64);
/// An event as the output shows it: (user, amount, ISO-8601 time).
type Row = (String, i64, String);

fn events(seed: u64, range: std::ops::Range<u64>) -> Vec<Event> {
    range.map(|i| keel::sample::event(seed, i, 30, 7)).collect()
}

/// Writes `evs` as one Parquet file with row groups of `group` rows, written in batches of 1000.
fn write_parquet(path: &Path, evs: &[Event], group: usize, codec: Compression) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]));
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(group)).set_compression(codec).build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema.clone(), Some(props)).unwrap();
    for chunk in evs.chunks(1000) {
        let users = StringArray::from_iter_values(chunk.iter().map(|e| e.0.as_str()));
        let amounts = Int64Array::from_iter_values(chunk.iter().map(|e| e.1));
        let ts = TimestampMillisecondArray::from_iter_values(chunk.iter().map(|e| e.2));
        w.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(users), Arc::new(amounts), Arc::new(ts)]).unwrap())
            .unwrap();
    }
    let meta = w.close().unwrap();
    assert!(meta.num_row_groups() >= evs.len() / group, "several row groups");
}

fn expected_totals(evs: &[Event]) -> Totals {
    let mut t = Totals::new();
    let fmt = keel::types::time::format_timestamp_ms;
    for (u, a, ts) in evs {
        let s = ts.div_euclid(10_000) * 10_000;
        let e = t.entry((u.clone(), fmt(s))).or_insert((fmt(s + 10_000), 0, 0));
        e.1 += 1;
        e.2 += a;
    }
    t
}

/// How many times each event occurs, as the output shows events.
fn multiset(evs: &[Event]) -> BTreeMap<Row, usize> {
    let mut m = BTreeMap::new();
    for (u, a, ts) in evs {
        *m.entry((u.clone(), *a, keel::types::time::format_timestamp_ms(*ts))).or_insert(0) += 1;
    }
    m
}

/// The rows the `copy` topic holds, counted.
fn copied(data: &Path) -> BTreeMap<Row, usize> {
    let mut m = BTreeMap::new();
    for r in topic_rows(data, "copy") {
        let ts = r["ts"].as_str().expect("ts is a string").to_string();
        *m.entry((r["user_id"].as_str().unwrap().to_string(), r["amount"].as_i64().unwrap(), ts)).or_insert(0) += 1;
    }
    m
}

const EVENTS_TABLE: &str = "
CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'PATH', 'format' = 'parquet');
CREATE TABLE copy (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3))
WITH ('connector' = 'topic', 'topic' = 'copy', 'format' = 'json');
";

const COPY: &str = "INSERT INTO copy SELECT user_id, amount, ts FROM events;";

/// The totals pipeline of the other tests plus a plain copy, both reading the Parquet table.
fn pipeline(input: &Path, copy_only: bool) -> String {
    let tables = EVENTS_TABLE.replace("PATH", &input.display().to_string());
    if copy_only {
        return format!("{tables}\n{COPY}");
    }
    let totals = WINDOW_SQL.split("CREATE TABLE totals").nth(1).unwrap();
    format!("{tables}\nCREATE TABLE totals{totals}\n{COPY}")
}

#[test]
fn parquet_files_are_read_whole_through_a_sql_pipeline() {
    let seed = seed("parquet_files");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let evs = events(seed, 0..12_000);
    let codecs = [
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::ZSTD(ZstdLevel::default()),
        Compression::UNCOMPRESSED,
    ];
    for (f, codec) in codecs.into_iter().enumerate() {
        write_parquet(&input.join(format!("part-{f}.parquet")), &evs[f * 3000..f * 3000 + 3000], 700, codec);
    }
    // Hidden and marker files are not read.
    std::fs::write(input.join(".part-9.parquet.inprogress"), "not parquet").unwrap();
    std::fs::write(input.join("_SUCCESS"), "").unwrap();
    let sql = dir.path().join("pq.sql");
    std::fs::write(&sql, pipeline(&input, false)).unwrap();
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--quiet", "-p", "2"]));
    assert_same(&actual_totals(&topic_rows(dir.path(), "totals")), &expected_totals(&evs));
    assert_eq!(copied(dir.path()), multiset(&evs));
}

#[test]
fn a_parquet_file_is_resumed_from_the_middle_after_a_kill() {
    use std::os::unix::process::ExitStatusExt;
    let seed = seed("parquet_resume");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let evs = events(seed, 0..120_000);
    // Row groups of 7000 rows: batches of 8192 rows end in the middle of one.
    write_parquet(&input.join("big.parquet"), &evs, 7000, Compression::SNAPPY);
    let sql = dir.path().join("copy.sql");
    std::fs::write(&sql, pipeline(&input, true)).unwrap();
    // Dies right after the first checkpoint's output is committed.
    let status = keel(dir.path())
        .args(["run", sql.to_str().unwrap(), "--quiet", "--checkpoint-interval", "20ms", "-p", "1"])
        .env("KEEL_FAULTS", "sink.commit=kill@1")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9));
    let before: usize = copied(dir.path()).values().sum();
    assert!(
        before > 0 && before < evs.len(),
        "the first checkpoint should fall inside the file: {before} of {} rows committed",
        evs.len()
    );
    println!("{before} of {} rows were committed before the kill", evs.len());
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--quiet", "-p", "2"]));
    let after = copied(dir.path());
    assert_eq!(after.values().sum::<usize>(), evs.len(), "{before} rows before the restore");
    assert_eq!(after, multiset(&evs));
}

#[test]
fn a_parquet_column_that_does_not_fit_fails_the_job_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // A boolean 'ts': Arrow has no cast from BOOLEAN to TIMESTAMP.
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts", DataType::Boolean, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec!["a"])), Arc::new(arrow::array::BooleanArray::from(vec![true]))],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(input.join("odd.parquet")).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let sql = dir.path().join("copy.sql");
    std::fs::write(&sql, pipeline(&input, true)).unwrap();
    let out = keel(dir.path()).args(["run", sql.to_str().unwrap(), "--quiet"]).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("odd.parquet") && err.contains("column 'ts'") && err.contains("Boolean"), "{err}");
}
