//! Unit tests of the filesystem source: Parquet positions (restored at any row, across row
//! groups), Parquet columns matched by name and cast, and bad lines under each policy, with the
//! dead letters committed exactly once across a lost interval.

use super::*;
use arrow::array::{Array, AsArray, Int32Array, Int64Array, ListArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::Path;

use crate::upsert::tests::ctx;

fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

fn config(path: &Path, format: FileSourceFormat, bad_records: BadRecordPolicy) -> FileSourceConfig {
    FileSourceConfig {
        table: "t".into(),
        path: path.into(),
        format,
        schema: table_schema(),
        event_time: Some((2, 1000)),
        files: Some(list_files(path).unwrap()),
        monitor_interval: None,
        bad_records,
        uid: "source-t".into(),
    }
}

/// Writes rows `0..n` as Parquet: `ts` first and `id` as INT32 (so columns are found by name
/// and cast), no `name` column, row groups of `group` rows, zstd-compressed.
fn write_parquet(path: &Path, n: i32, group: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("id", DataType::Int32, false),
    ]));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema.clone(), Some(props)).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(700) {
        let ts = TimestampMillisecondArray::from(chunk.iter().map(|&i| 1_000_000 + i64::from(i)).collect::<Vec<_>>());
        let id = Int32Array::from(chunk.to_vec());
        w.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(ts), Arc::new(id)]).unwrap()).unwrap();
    }
    let meta = w.close().unwrap();
    assert!(meta.num_row_groups() > 2, "the file needs several row groups");
}

fn restored(states: serde_json::Value, checkpoint: u64) -> RestoredState {
    RestoredState { parts: vec![states.to_string().into_bytes()], inherited: vec![0], checkpoint: Some(checkpoint) }
}

/// Polls until exhausted: every batch's `id` column, and the source's snapshots after each batch.
fn drain(src: &mut FileSource) -> Vec<i64> {
    let mut ids = vec![];
    loop {
        match src.poll().unwrap() {
            SourcePoll::Batch(b) => {
                assert_eq!(b.schema(), table_schema());
                ids.extend(b.column(0).as_primitive::<Int64Type>().values().iter().copied());
                assert_eq!(b.column(1).null_count(), b.num_rows(), "the file has no 'name': NULLs");
            }
            SourcePoll::Exhausted => return ids,
            SourcePoll::Pending => panic!("a bounded source is never pending"),
        }
    }
}

#[test]
fn parquet_is_read_from_any_restored_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_parquet(&input.join("a.parquet"), 20_000, 3000);
    let cfg = config(&input, FileSourceFormat::Parquet, BadRecordPolicy::Fail);
    for from in [0u64, 1, 2999, 3000, 3001, 8192, 17_999, 19_999, 20_000] {
        let mut src = FileSource::new(cfg.clone());
        let state = serde_json::json!([{"name": "a.parquet", "offset": from, "max_ts": MIN_WATERMARK, "done": false}]);
        src.open(&ctx(dir.path()), restored(state, 1)).unwrap();
        let ids = drain(&mut src);
        assert_eq!(ids, (from as i64..20_000).collect::<Vec<_>>(), "restored at row {from}");
        let wm = src.watermark();
        let expect = if from < 20_000 { 1_000_000 + 19_999 - 1000 } else { MIN_WATERMARK.saturating_sub(1000) };
        assert_eq!(wm, WatermarkStatus::Active(expect), "restored at row {from}");
    }
}

#[test]
fn a_parquet_snapshot_between_batches_resumes_without_loss_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_parquet(&input.join("a.parquet"), 20_000, 3000);
    let cfg = config(&input, FileSourceFormat::Parquet, BadRecordPolicy::Fail);
    let mut first = FileSource::new(cfg.clone());
    first.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    let SourcePoll::Batch(b) = first.poll().unwrap() else { panic!("expected rows") };
    assert!(b.num_rows() < 20_000);
    let state = first.snapshot(1).unwrap();
    let mut ids: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
    drop(first);
    let mut second = FileSource::new(cfg);
    let restored = RestoredState { parts: vec![state], inherited: vec![0], checkpoint: Some(1) };
    second.open(&ctx(dir.path()), restored).unwrap();
    ids.extend(drain(&mut second));
    assert_eq!(ids, (0..20_000).collect::<Vec<_>>());
}

#[test]
fn parquet_columns_that_do_not_fit_fail_naming_file_column_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // 'id' is a list: no cast to BIGINT.
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::new_list(DataType::Int32, true), true)]));
    let ids = ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(vec![Some(vec![Some(1)])]);
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(input.join("a.parquet")).unwrap(), schema.clone(), None).unwrap();
    w.write(&RecordBatch::try_new(schema, vec![Arc::new(ids)]).unwrap()).unwrap();
    w.close().unwrap();
    let mut src = FileSource::new(config(&input, FileSourceFormat::Parquet, BadRecordPolicy::Fail));
    src.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    let err = src.poll().unwrap_err().to_string();
    assert!(err.contains("a.parquet") && err.contains("column 'id'") && err.contains("Int64"), "{err}");

    // No 'id' at all, which the table declares NOT NULL.
    let schema = Arc::new(Schema::new(vec![Field::new("other", DataType::Int64, true)]));
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(input.join("a.parquet")).unwrap(), schema.clone(), None).unwrap();
    w.write(&RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap()).unwrap();
    w.close().unwrap();
    let mut src = FileSource::new(config(&input, FileSourceFormat::Parquet, BadRecordPolicy::Fail));
    src.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    let err = src.poll().unwrap_err().to_string();
    assert!(err.contains("a.parquet") && err.contains("no column 'id'") && err.contains("NOT NULL"), "{err}");

    // Not Parquet at all.
    std::fs::write(input.join("a.parquet"), "{\"id\": 1}\n").unwrap();
    let mut src = FileSource::new(config(&input, FileSourceFormat::Parquet, BadRecordPolicy::Fail));
    src.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    let err = src.poll().unwrap_err().to_string();
    assert!(err.contains("a.parquet") && err.contains("not a readable Parquet file"), "{err}");
}

const GOOD: &str = "{\"id\": 1, \"name\": \"a\", \"ts\": 5000}";

#[test]
fn bad_lines_fail_with_file_and_line_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // Line 4 is bad; line 2 is blank and still counted.
    std::fs::write(input.join("a.jsonl"), format!("{GOOD}\n\n{GOOD}\n{{\"id\": \"x\"}}\n{GOOD}\n")).unwrap();
    let mut src = FileSource::new(config(&input, FileSourceFormat::JsonLines, BadRecordPolicy::Fail));
    src.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    let err = src.poll().unwrap_err().to_string();
    let at = 2 * GOOD.len() + 3;
    assert!(err.contains(&format!("line 4 (byte {at}) of")) && err.contains("a.jsonl"), "{err}");

    let c = ctx(dir.path());
    let mut src = FileSource::new(config(&input, FileSourceFormat::JsonLines, BadRecordPolicy::Skip));
    src.open(&c, RestoredState::default()).unwrap();
    let SourcePoll::Batch(b) = src.poll().unwrap() else { panic!("expected rows") };
    assert_eq!(b.num_rows(), 3);
    assert_eq!(c.metrics.bad_records.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// Committed dead letters of topic `dl`.
fn letters(data: &Path) -> Vec<serde_json::Value> {
    let t = Log::open(data).unwrap().topic("dl").unwrap();
    let mut r = t.reader(0, 0).unwrap();
    let mut out = vec![];
    while let Some(chunk) = r.read(1 << 20).unwrap() {
        chunk.for_each(|rec| out.push(serde_json::from_slice(rec.value).unwrap())).unwrap();
    }
    out
}

#[test]
fn dead_letters_are_committed_once_with_their_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.jsonl"), format!("{GOOD}\nnot json\n")).unwrap();
    std::fs::write(input.join("b.jsonl"), format!("{{\"id\": null}}\n{GOOD}\n")).unwrap();
    let cfg = config(&input, FileSourceFormat::JsonLines, BadRecordPolicy::DeadLetter { topic: "dl".into() });
    let mut first = FileSource::new(cfg.clone());
    first.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    let mut second_instance = FileSource::new(cfg.clone());
    let err = second_instance.open(&ctx(dir.path()), RestoredState::default()).unwrap_err().to_string();
    assert!(err.contains("two INSERTs"), "{err}");
    assert!(matches!(first.poll().unwrap(), SourcePoll::Batch(b) if b.num_rows() == 1));
    let state = first.snapshot(1).unwrap();
    assert!(letters(dir.path()).is_empty(), "nothing is visible before the checkpoint completes");
    first.checkpoint_complete(1).unwrap();
    // The second file's bad line is written, but the job dies before checkpoint 2.
    assert!(matches!(first.poll().unwrap(), SourcePoll::Batch(b) if b.num_rows() == 1));
    drop(first);
    let mut again = FileSource::new(cfg);
    again
        .open(&ctx(dir.path()), RestoredState { parts: vec![state], inherited: vec![0], checkpoint: Some(1) })
        .unwrap();
    assert!(matches!(again.poll().unwrap(), SourcePoll::Batch(b) if b.num_rows() == 1));
    assert!(matches!(again.poll().unwrap(), SourcePoll::Exhausted));
    again.snapshot(2).unwrap();
    again.checkpoint_complete(2).unwrap();
    let got = letters(dir.path());
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0]["line"].as_u64(), got[0]["record"].as_str()), (Some(2), Some("not json")));
    assert!(got[0]["file"].as_str().unwrap().ends_with("a.jsonl"));
    assert_eq!((got[1]["line"].as_u64(), got[1]["record"].as_str()), (Some(1), Some("{\"id\": null}")));
    assert!(got[1]["file"].as_str().unwrap().ends_with("b.jsonl") && got[1]["error"].is_string());
}

#[test]
fn lines_longer_than_the_read_buffer_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // A 3 MB line (three times the first read) between ordinary ones, and a last line without
    // a newline: every row must come out, in order.
    let long = format!("{{\"id\": 2, \"name\": \"{}\", \"ts\": 0}}", "x".repeat(3 << 20));
    let text = format!("{{\"id\": 1, \"ts\": 0}}\n{long}\n{{\"id\": 3, \"ts\": 0}}\n{{\"id\": 4, \"ts\": 0}}");
    std::fs::write(input.join("a.jsonl"), text).unwrap();
    let mut src = FileSource::new(config(&input, FileSourceFormat::JsonLines, BadRecordPolicy::Fail));
    src.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    let mut ids = vec![];
    let mut long_name = 0;
    loop {
        match src.poll().unwrap() {
            SourcePoll::Batch(b) => {
                ids.extend(b.column(0).as_primitive::<Int64Type>().values().iter().copied());
                let names = b.column(1).as_string::<i32>();
                long_name = long_name.max((0..b.num_rows()).map(|i| names.value(i).len()).max().unwrap_or(0));
            }
            SourcePoll::Exhausted => break,
            SourcePoll::Pending => panic!("a bounded source is never pending"),
        }
    }
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(long_name, 3 << 20);
}

/// Reads `text` as the only CSV file of a fresh directory, skipping bad lines: the rows' ids,
/// the second row's name and how many lines were bad.
fn read_csv(text: &str) -> (Vec<i64>, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), text).unwrap();
    let c = ctx(dir.path());
    let mut src = FileSource::new(config(&input, FileSourceFormat::Csv { delimiter: b',' }, BadRecordPolicy::Skip));
    src.open(&c, RestoredState::default()).unwrap();
    let SourcePoll::Batch(b) = src.poll().unwrap() else { panic!("expected rows") };
    let ids = b.column(0).as_primitive::<Int64Type>().values().to_vec();
    let second = b.column(1).as_string::<i32>().value(1).to_string();
    (ids, second, c.metrics.bad_records.load(std::sync::atomic::Ordering::Relaxed))
}

#[test]
fn csv_lines_are_read_together_and_bad_ones_still_found_one_by_one() {
    // All good: read through one reader, in order, quoting kept.
    let all_good = "1,a,2024-01-01T00:00:01\n2,\"b,c\",2024-01-01T00:00:02\n3,d,2024-01-01T00:00:03\n";
    assert_eq!(read_csv(all_good), (vec![1, 2, 3], "b,c".to_string(), 0));
    // A line with a text id and one with too few fields among good ones.
    let two_bad =
        "4,e,2024-01-01T00:00:04\nx,f,2024-01-01T00:00:05\n6,g,2024-01-01T00:00:06\n7,h\n8,i,2024-01-01T00:00:08\n";
    assert_eq!(read_csv(two_bad), (vec![4, 6, 8], "g".to_string(), 2), "the good lines, in order");
}

/// Polls a bounded source to its end: the ids of its rows.
fn ids_to_the_end(src: &mut FileSource) -> Vec<i64> {
    let mut ids = vec![];
    loop {
        match src.poll().unwrap() {
            SourcePoll::Batch(b) => ids.extend(b.column(0).as_primitive::<Int64Type>().values().iter().copied()),
            SourcePoll::Exhausted => return ids,
            SourcePoll::Pending => panic!("a bounded source is never pending"),
        }
    }
}

/// A JSON line of `id` whose text is `len` bytes long.
fn json_line_of(id: i64, len: usize) -> String {
    let head = format!("{{\"id\": {id}, \"ts\": 0, \"name\": \"");
    format!("{head}{}\"}}", "x".repeat(len - head.len() - 2))
}

#[test]
fn an_over_long_line_is_a_bad_record_and_reading_goes_on_after_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let at_limit = json_line_of(2, MAX_LINE_BYTES);
    let over = json_line_of(3, MAX_LINE_BYTES + 1);
    // The file's last line is over-long too, and has no newline.
    let text = format!("{GOOD}\n{at_limit}\n{over}\n{{\"id\": 4, \"ts\": 0}}\n{over}");
    std::fs::write(input.join("a.jsonl"), &text).unwrap();
    let dl = BadRecordPolicy::DeadLetter { topic: "dl".into() };
    let c = ctx(dir.path());
    let mut src = FileSource::new(config(&input, FileSourceFormat::JsonLines, dl));
    src.open(&c, RestoredState::default()).unwrap();
    assert_eq!(ids_to_the_end(&mut src), [1, 2, 4], "the line at the limit is read, the longer ones are not");
    assert_eq!(c.metrics.bad_records.load(std::sync::atomic::Ordering::Relaxed), 2);
    src.snapshot(1).unwrap();
    src.checkpoint_complete(1).unwrap();
    let got = letters(dir.path());
    assert_eq!(got.len(), 2, "{:?}", got.iter().map(|l| &l["error"]).collect::<Vec<_>>());
    let third = GOOD.len() + 1 + at_limit.len() + 1;
    let fifth = third + over.len() + 1 + "{\"id\": 4, \"ts\": 0}".len() + 1;
    for (letter, (line, offset)) in got.iter().zip([(3, third), (5, fifth)]) {
        assert_eq!((letter["line"].as_u64(), letter["offset"].as_u64()), (Some(line), Some(offset as u64)));
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains(&format!("longer than the limit of {} bytes", MAX_LINE_BYTES)), "{error}");
        let record = letter["record"].as_str().unwrap();
        assert_eq!(record.len(), crate::dead_letter::MAX_RECORD_BYTES, "only a prefix of the line is kept");
        assert!(over.starts_with(record));
        assert_eq!(letter["record_truncated"].as_bool(), Some(true));
        assert_eq!(letter["record_bytes"].as_u64(), Some(over.len() as u64));
    }

    // Under 'fail', the job stops naming the line and the limit.
    let mut src = FileSource::new(config(&input, FileSourceFormat::JsonLines, BadRecordPolicy::Fail));
    src.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    let err = loop {
        match src.poll() {
            Ok(SourcePoll::Batch(_)) => continue,
            Ok(_) => panic!("the over-long line did not fail the job"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(err.contains(&format!("line 3 (byte {third})")) && err.contains("longer than the limit"), "{err}");
}

#[test]
fn a_watched_over_long_line_waits_for_its_newline_then_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let over = json_line_of(2, MAX_LINE_BYTES + 100);
    // Written in two pieces: the over-long line's end (and newline) comes later.
    std::fs::write(input.join("a.jsonl"), format!("{GOOD}\n{}", &over[..MAX_LINE_BYTES + 50])).unwrap();
    let mut cfg = config(&input, FileSourceFormat::JsonLines, BadRecordPolicy::Skip);
    cfg.files = None;
    cfg.monitor_interval = Some(Duration::from_millis(1));
    let c = ctx(dir.path());
    let mut src = FileSource::new(cfg);
    src.open(&c, RestoredState::default()).unwrap();
    let mut ids = vec![];
    let poll = |src: &mut FileSource, ids: &mut Vec<i64>| {
        for _ in 0..4 {
            if let SourcePoll::Batch(b) = src.poll().unwrap() {
                ids.extend(b.column(0).as_primitive::<Int64Type>().values().iter().copied());
            }
        }
    };
    poll(&mut src, &mut ids);
    assert_eq!(ids, [1]);
    assert_eq!(c.metrics.bad_records.load(std::sync::atomic::Ordering::Relaxed), 0, "the line is not complete yet");
    let mut f = std::fs::OpenOptions::new().append(true).open(input.join("a.jsonl")).unwrap();
    std::io::Write::write_all(
        &mut f,
        format!("{}\n{{\"id\": 3, \"ts\": 0}}\n", &over[MAX_LINE_BYTES + 50..]).as_bytes(),
    )
    .unwrap();
    poll(&mut src, &mut ids);
    assert_eq!(ids, [1, 3]);
    assert_eq!(c.metrics.bad_records.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn dead_letters_keep_a_bounded_prefix_of_the_record_and_of_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // A 300 KiB line (well under the line limit) whose id is an array of 100 K numbers: the
    // decoder's reason quotes the value.
    let bad = format!("{{\"id\": [{}], \"ts\": 0}}", vec!["1"; 150_000].join(","));
    std::fs::write(input.join("a.jsonl"), format!("{bad}\n{GOOD}\n")).unwrap();
    let mut src = FileSource::new(config(
        &input,
        FileSourceFormat::JsonLines,
        BadRecordPolicy::DeadLetter { topic: "dl".into() },
    ));
    src.open(&ctx(dir.path()), RestoredState::default()).unwrap();
    assert_eq!(ids_to_the_end(&mut src), [1]);
    src.snapshot(1).unwrap();
    src.checkpoint_complete(1).unwrap();
    let got = letters(dir.path());
    assert_eq!(got.len(), 1);
    let record = got[0]["record"].as_str().unwrap();
    assert_eq!(record, &bad[..crate::dead_letter::MAX_RECORD_BYTES]);
    assert_eq!(
        (got[0]["record_truncated"].as_bool(), got[0]["record_bytes"].as_u64()),
        (Some(true), Some(bad.len() as u64))
    );
    assert!(got[0]["error"].as_str().unwrap().len() <= crate::dead_letter::MAX_REASON_BYTES + 64);
    assert!(got[0].to_string().len() < 1 << 20, "a dead letter fits a dead-letter topic's record limit");
}
