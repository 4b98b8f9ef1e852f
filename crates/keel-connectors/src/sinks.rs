//! Sinks: the topic sink and the filesystem sink commit exactly once through two-phase commit;
//! the print sink writes immediately and is at-least-once (rows printed after the last
//! checkpoint are printed again after a restart).
//!
//! Changelogs (batches ending in `_op`, see `keel_runtime::changelog`): the `debezium-json`
//! format of the topic and filesystem sinks writes each change as Flink's debezium envelope; the
//! print sink prefixes each row with its kind; the blackhole sink counts them. The `json` and
//! `csv` formats are append-only and refuse a changelog batch (an internal error: the planner
//! refuses such pipelines first). A debezium topic sink sends every change of one row (equal
//! data) to one partition, so a row's insert and its later retraction keep their order.
//!
//! Filesystem sink invariants: rows of one checkpoint interval go to a hidden in-progress file
//! `.JOB-SUBTASK-SEQ.inprogress` in the target directory; at barrier `n` it is fsynced and
//! renamed to `.JOB-SUBTASK-n.pending`; when checkpoint `n` completes it is renamed to
//! `part-JOB-SUBTASK-n.EXT`, which readers see atomically. On recovery from checkpoint `c`,
//! pending files up to `c` are published, and newer or in-progress ones are deleted. Hidden files
//! (leading `.`) are never results.

use crate::changelog_format::{Changes, ensure_append_only, write_debezium, write_print_row};
use crate::error::ConnectorError;
use crate::json::encode_row;
use crate::staging::StagedTopicWriter;
use arrow::array::RecordBatch;
use keel_log::{Log, TopicConfig};
use keel_runtime::{Metrics, Operator, RestoredState, Result, RuntimeError, TaskContext};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The record format of the topic sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicFormat {
    /// One JSON object per row (append-only).
    Json,
    /// Flink's debezium-json change envelope per row (accepts changelogs).
    DebeziumJson,
}

/// Writes rows as JSON records to a topic, exactly once.
pub struct TopicSink {
    pub data_dir: PathBuf,
    pub topic: String,
    pub uid: String,
    pub format: TopicFormat,
    writer: Option<StagedTopicWriter>,
    partitions: u32,
    next: u32,
    line: String,
    row: String,
    metrics: Option<Arc<Metrics>>,
}

impl TopicSink {
    /// A sink writing plain JSON rows (see `with_format`).
    pub fn new(data_dir: PathBuf, topic: String, uid: String) -> Self {
        TopicSink {
            data_dir,
            topic,
            uid,
            format: TopicFormat::Json,
            writer: None,
            partitions: 1,
            next: 0,
            line: String::new(),
            row: String::new(),
            metrics: None,
        }
    }

    pub fn with_format(mut self, format: TopicFormat) -> Self {
        self.format = format;
        self
    }
}

impl Operator for TopicSink {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        let log = Log::open(&self.data_dir).map_err(ConnectorError::from)?;
        let topic = log.topic_or_create(&self.topic, TopicConfig::new(1)).map_err(ConnectorError::from)?;
        self.partitions = topic.partitions();
        self.next = ctx.subtask % self.partitions;
        self.metrics = Some(ctx.metrics.clone());
        self.writer = Some(StagedTopicWriter::for_task(topic, ctx, &self.uid, restored.checkpoint)?);
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let w = self.writer.as_mut().ok_or_else(|| RuntimeError::Internal("topic sink used before open".into()))?;
        match self.format {
            TopicFormat::Json => {
                ensure_append_only(&batch, &format!("the json topic sink writing '{}'", self.topic))?;
                for row in 0..batch.num_rows() {
                    self.line.clear();
                    encode_row(&batch, row, &mut self.line);
                    w.write(self.next, None, self.line.as_bytes())?;
                    self.next = (self.next + 1) % self.partitions;
                }
            }
            TopicFormat::DebeziumJson => {
                let changes = Changes::of(&batch)?;
                for row in 0..changes.num_rows() {
                    self.row.clear();
                    encode_row(&changes.data, row, &mut self.row);
                    self.line.clear();
                    write_debezium(&self.row, changes.kind(row)?, &mut self.line);
                    // Every change of one row goes to one partition: its order is kept.
                    let partition =
                        (keel_types::keys::hash_key(self.row.as_bytes()) % u64::from(self.partitions)) as u32;
                    w.write(partition, None, self.line.as_bytes())?;
                }
            }
        }
        if let Some(m) = &self.metrics {
            Metrics::add(&m.records_out, batch.num_rows() as u64);
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        if let Some(w) = &mut self.writer {
            w.pre_commit(checkpoint)?;
        }
        Ok(None)
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        if let Some(w) = &mut self.writer {
            w.commit_upto(checkpoint)?;
        }
        Ok(())
    }
}

/// The file format of the filesystem sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Csv,
    /// Flink's debezium-json change envelopes, one per line (accepts changelogs).
    DebeziumJson,
}

impl FileFormat {
    fn extension(self) -> &'static str {
        match self {
            FileFormat::Json | FileFormat::DebeziumJson => "jsonl",
            FileFormat::Csv => "csv",
        }
    }

    /// True for a format that can write updates and deletes (not only inserts).
    pub fn accepts_updates(self) -> bool {
        self == FileFormat::DebeziumJson
    }
}

/// Writes rows to files under a directory, publishing them on checkpoint completion.
pub struct FileSink {
    dir: PathBuf,
    format: FileFormat,
    table: String,
    job: String,
    subtask: u32,
    seq: u64,
    current: Option<(PathBuf, BufWriter<File>)>,
    line: String,
    metrics: Option<Arc<Metrics>>,
}

fn parse_hidden(name: &str, job: &str) -> Option<(u32, u64, bool)> {
    let rest = name.strip_prefix('.')?.strip_prefix(job)?.strip_prefix('-')?;
    let (rest, pending) = match rest.strip_suffix(".pending") {
        Some(r) => (r, true),
        None => (rest.strip_suffix(".inprogress")?, false),
    };
    let (sub, n) = rest.split_once('-')?;
    Some((sub.parse().ok()?, n.parse().ok()?, pending))
}

impl FileSink {
    pub fn new(dir: PathBuf, format: FileFormat) -> Self {
        FileSink {
            dir,
            format,
            table: String::new(),
            job: String::new(),
            subtask: 0,
            seq: 0,
            current: None,
            line: String::new(),
            metrics: None,
        }
    }

    /// Names the table this sink writes (for error messages).
    pub fn for_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    fn describe(&self) -> String {
        if self.table.is_empty() {
            format!("the filesystem sink writing {}", self.dir.display())
        } else {
            format!("the filesystem sink of table {} ({})", self.table, self.dir.display())
        }
    }

    fn final_path(&self, subtask: u32, checkpoint: u64) -> PathBuf {
        self.dir.join(format!("part-{}-{subtask}-{checkpoint:010}.{}", self.job, self.format.extension()))
    }

    fn publish(&self, pending: &Path, subtask: u32, checkpoint: u64) -> Result<()> {
        let target = self.final_path(subtask, checkpoint);
        keel_types::faults::hit("sink.commit");
        fs::rename(pending, &target).map_err(ConnectorError::io("cannot publish file", pending))?;
        Ok(())
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(ConnectorError::io("cannot fsync directory", &self.dir))?;
        Ok(())
    }

    fn hidden_files(&self) -> Result<Vec<(u32, u64, bool, PathBuf)>> {
        let mut out = vec![];
        for e in fs::read_dir(&self.dir).map_err(ConnectorError::io("cannot list", &self.dir))? {
            let e = e.map_err(ConnectorError::io("cannot list", &self.dir))?;
            if let Some((sub, n, pending)) = parse_hidden(&e.file_name().to_string_lossy(), &self.job) {
                out.push((sub, n, pending, e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn write_header_if_new(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Operator for FileSink {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.job = ctx.job.clone();
        self.subtask = ctx.subtask;
        self.metrics = Some(ctx.metrics.clone());
        fs::create_dir_all(&self.dir).map_err(ConnectorError::io("cannot create sink directory", &self.dir))?;
        for (sub, n, pending, path) in self.hidden_files()? {
            if sub % ctx.parallelism != ctx.subtask {
                continue;
            }
            if pending && restored.checkpoint.is_some_and(|c| n <= c) {
                self.publish(&path, sub, n)?;
            } else {
                fs::remove_file(&path).map_err(ConnectorError::io("cannot delete aborted file", &path))?;
            }
        }
        self.sync_dir()
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        if !self.format.accepts_updates() {
            ensure_append_only(&batch, &self.describe())?;
        }
        if self.current.is_none() {
            self.seq += 1;
            let path = self.dir.join(format!(".{}-{}-{}.inprogress", self.job, self.subtask, self.seq));
            let f = File::create(&path).map_err(ConnectorError::io("cannot create", &path))?;
            self.current = Some((path, BufWriter::with_capacity(256 << 10, f)));
            self.write_header_if_new()?;
        }
        let Some((path, w)) = self.current.as_mut() else { return Ok(()) };
        match self.format {
            FileFormat::Json => {
                for row in 0..batch.num_rows() {
                    self.line.clear();
                    encode_row(&batch, row, &mut self.line);
                    self.line.push('\n');
                    w.write_all(self.line.as_bytes()).map_err(ConnectorError::io("cannot write", path))?;
                }
            }
            FileFormat::Csv => {
                let mut cw = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.3fZ".to_string())
                    .build(&mut *w);
                cw.write(&batch)
                    .map_err(|e| ConnectorError::Encode { what: "CSV rows".into(), reason: e.to_string() })?;
            }
            FileFormat::DebeziumJson => {
                let changes = Changes::of(&batch)?;
                let mut row_json = String::new();
                for row in 0..changes.num_rows() {
                    row_json.clear();
                    encode_row(&changes.data, row, &mut row_json);
                    self.line.clear();
                    write_debezium(&row_json, changes.kind(row)?, &mut self.line);
                    self.line.push('\n');
                    w.write_all(self.line.as_bytes()).map_err(ConnectorError::io("cannot write", path))?;
                }
            }
        }
        if let Some(m) = &self.metrics {
            Metrics::add(&m.records_out, batch.num_rows() as u64);
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        if let Some((path, w)) = self.current.take() {
            let f = w.into_inner().map_err(|e| ConnectorError::io("cannot flush", &path)(e.into_error()))?;
            f.sync_all().map_err(ConnectorError::io("cannot fsync", &path))?;
            let pending = self.dir.join(format!(".{}-{}-{checkpoint}.pending", self.job, self.subtask));
            fs::rename(&path, &pending).map_err(ConnectorError::io("cannot rename", &path))?;
            self.sync_dir()?;
        }
        Ok(None)
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        let mut published = false;
        for (sub, n, pending, path) in self.hidden_files()? {
            if sub == self.subtask && pending && n <= checkpoint {
                self.publish(&path, sub, n)?;
                published = true;
            }
        }
        if published {
            self.sync_dir()?;
        }
        Ok(())
    }
}

/// Prints rows to standard output as `+I[v1, v2, ...]`, as Flink's print connector does; the rows
/// of a changelog carry their kind (`+I`, `-U`, `+U`, `-D`) in place of `+I`.
/// At-least-once: rows printed after the last checkpoint are printed again after a restart.
pub struct PrintSink {
    pub table: String,
}

impl Operator for PrintSink {
    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let changes = Changes::of(&batch)?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut line = String::new();
        for row in 0..changes.num_rows() {
            line.clear();
            write_print_row(&changes.data, row, changes.kind(row)?, &mut line);
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(|e| {
                RuntimeError::External(format!("print sink '{}': cannot write to stdout: {e}", self.table))
            })?;
        }
        Ok(())
    }
}

/// Discards rows (of append-only batches and changelogs alike), counting them as written (for
/// benchmarks and tests).
#[derive(Default)]
pub struct BlackholeSink {
    metrics: Option<Arc<Metrics>>,
}

impl Operator for BlackholeSink {
    fn open(&mut self, ctx: &TaskContext, _restored: RestoredState) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        if let Some(m) = &self.metrics {
            Metrics::add(&m.records_out, batch.num_rows() as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upsert::tests::{changes, ctx, records};
    use keel_runtime::changelog::RowKind::*;

    #[test]
    fn debezium_topic_sink_writes_envelopes_and_keeps_a_rows_changes_in_one_partition() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Log::open(d).unwrap().create_topic("cdc", TopicConfig::new(3)).unwrap();
        let mut sink = TopicSink::new(d.into(), "cdc".into(), "sink-cdc".into()).with_format(TopicFormat::DebeziumJson);
        sink.open(&ctx(d), RestoredState::default()).unwrap();
        let rows =
            [("a", 1, Insert), ("b", 1, Insert), ("a", 1, UpdateBefore), ("a", 2, UpdateAfter), ("b", 1, Delete)];
        sink.process(changes(&rows), &mut vec![]).unwrap();
        sink.snapshot(1).unwrap();
        assert!(records(d, "cdc").is_empty());
        sink.checkpoint_complete(1).unwrap();
        let recs = records(d, "cdc");
        assert_eq!(recs.len(), 5);
        assert!(recs.iter().all(|r| r.1.is_none()));
        let values: Vec<&str> = recs.iter().map(|r| r.2.as_str()).collect();
        for want in [
            r#"{"before":null,"after":{"k":"a","n":1},"op":"c"}"#,
            r#"{"before":{"k":"a","n":1},"after":null,"op":"d"}"#,
            r#"{"before":null,"after":{"k":"a","n":2},"op":"c"}"#,
            r#"{"before":null,"after":{"k":"b","n":1},"op":"c"}"#,
            r#"{"before":{"k":"b","n":1},"after":null,"op":"d"}"#,
        ] {
            assert_eq!(values.iter().filter(|v| **v == want).count(), 1, "{want} in {values:?}");
        }
        // The insert and the retraction of one row share a partition, insert first.
        for row in [r#"{"k":"a","n":1}"#, r#"{"k":"b","n":1}"#] {
            let of_row: Vec<_> = recs.iter().filter(|r| r.2.contains(row)).collect();
            assert_eq!(of_row.len(), 2);
            assert_eq!(of_row[0].0, of_row[1].0, "{row} in two partitions");
            assert!(of_row[0].2.ends_with(r#""op":"c"}"#) && of_row[1].2.ends_with(r#""op":"d"}"#));
        }
    }

    #[test]
    fn filesystem_sink_writes_debezium_lines_to_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("out");
        let mut sink = FileSink::new(out_dir.clone(), FileFormat::DebeziumJson).for_table("t");
        sink.open(&ctx(dir.path()), RestoredState::default()).unwrap();
        sink.process(changes(&[("a", 1, Insert), ("a", 1, UpdateBefore), ("a", 3, UpdateAfter)]), &mut vec![]).unwrap();
        sink.snapshot(1).unwrap();
        sink.checkpoint_complete(1).unwrap();
        let files: Vec<_> = fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].to_string_lossy().ends_with(".jsonl"));
        assert_eq!(
            fs::read_to_string(&files[0]).unwrap(),
            concat!(
                r#"{"before":null,"after":{"k":"a","n":1},"op":"c"}"#,
                "\n",
                r#"{"before":{"k":"a","n":1},"after":null,"op":"d"}"#,
                "\n",
                r#"{"before":null,"after":{"k":"a","n":3},"op":"c"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn append_only_formats_refuse_changelogs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let batch = changes(&[("a", 1, Insert)]);
        let mut topic = TopicSink::new(d.into(), "plain".into(), "u".into());
        topic.open(&ctx(d), RestoredState::default()).unwrap();
        let err = topic.process(batch.clone(), &mut vec![]).unwrap_err();
        assert!(matches!(err, RuntimeError::Internal(_)) && err.to_string().contains("'plain'"), "{err}");
        // The same rows without _op are written.
        topic.process(batch.project(&[0, 1]).unwrap(), &mut vec![]).unwrap();
        for format in [FileFormat::Json, FileFormat::Csv] {
            let mut files = FileSink::new(d.join("files"), format).for_table("out_t");
            files.open(&ctx(d), RestoredState::default()).unwrap();
            let err = files.process(batch.clone(), &mut vec![]).unwrap_err();
            assert!(matches!(err, RuntimeError::Internal(_)) && err.to_string().contains("table out_t"), "{err}");
        }
        let mut hole = BlackholeSink::default();
        hole.open(&ctx(d), RestoredState::default()).unwrap();
        hole.process(batch.clone(), &mut vec![]).unwrap();
        PrintSink { table: "p".into() }.process(batch, &mut vec![]).unwrap();
    }
}
