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
//! (leading `.`) are never results. A partitioned sink (`partitioned.rs`) keeps the same life
//! cycle in each partition directory: one in-progress file per partition and interval, all of an
//! interval's files pending at its barrier and published when its checkpoint completes (then the
//! success file, if configured); recovery scans every partition directory. At most
//! `MAX_OPEN_FILES_PER_SINK / parallelism` in-progress files of a subtask are open at once (the
//! least recently written is closed, and reopened to append), so any number of partitions works. A subtask publishes
//! and recovers only the files named with its own subtask (after rescaling: old subtask `s`
//! belongs to new subtask `s % parallelism`).

use crate::changelog_format::{Changes, ensure_append_only, write_debezium, write_print_row};
use crate::error::ConnectorError;
use crate::json::encode_row;
use crate::partitioned::{self, Partitioning};
use crate::staging::StagedTopicWriter;
use arrow::array::RecordBatch;
use keel_log::{Log, TopicConfig};
use keel_runtime::{Metrics, Operator, RestoredState, Result, RuntimeError, TaskContext};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most in-progress files the subtasks of one filesystem sink keep open together: each keeps
/// `MAX_OPEN_FILES_PER_SINK / parallelism` (at least 2) open and closes the least recently
/// written one to open another, reopening it (to append) when its partition gets rows again. So a
/// partition column with any number of values never exhausts the process's file descriptors.
pub const MAX_OPEN_FILES_PER_SINK: usize = 256;

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

/// An in-progress file of the current checkpoint interval.
struct InProgress {
    path: PathBuf,
    /// Open for writing, or closed to stay within the sink's open files (reopened to append).
    w: Option<BufWriter<File>>,
    /// When it was last written (the sink's tick), while open.
    used: u64,
}

impl InProgress {
    /// Flushes and closes the file (it stays in progress).
    fn close(&mut self) -> Result<()> {
        if let Some(w) = self.w.take() {
            w.into_inner().map_err(|e| ConnectorError::io("cannot flush", &self.path)(e.into_error()))?;
        }
        Ok(())
    }

    /// Flushes and fsyncs the file, opening it again if it was closed.
    fn sync(self) -> Result<()> {
        let f = match self.w {
            Some(w) => w.into_inner().map_err(|e| ConnectorError::io("cannot flush", &self.path)(e.into_error()))?,
            None => File::open(&self.path).map_err(ConnectorError::io("cannot open", &self.path))?,
        };
        f.sync_all().map_err(ConnectorError::io("cannot fsync", &self.path))?;
        Ok(())
    }
}

/// Writes rows to files under a directory (or its partition directories), publishing them on
/// checkpoint completion.
pub struct FileSink {
    dir: PathBuf,
    format: FileFormat,
    table: String,
    partitioning: Option<Partitioning>,
    job: String,
    subtask: u32,
    seq: u64,
    /// This interval's in-progress files by partition path relative to `dir` (`""` without
    /// partitioning).
    open: HashMap<String, InProgress>,
    /// The in-progress files open for writing, by when they were last written (least recent
    /// first): at most `max_open`.
    handles: BTreeMap<u64, String>,
    tick: u64,
    max_open: usize,
    /// Partition directories first written to in this interval; the barrier makes their entries
    /// (and their parents') durable, whichever subtask created them.
    created: BTreeSet<PathBuf>,
    /// Partition directories whose entries this sink made durable already.
    durable: HashSet<PathBuf>,
    /// This subtask's pending files: (directory, checkpoint).
    pending: Vec<(PathBuf, u64)>,
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

fn pending_name(job: &str, subtask: u32, checkpoint: u64) -> String {
    format!(".{job}-{subtask}-{checkpoint}.pending")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ConnectorError::io("cannot fsync directory", dir))?;
    Ok(())
}

/// This job's hidden files in `dir`: (subtask, sequence or checkpoint, pending, path).
fn hidden_files(dir: &Path, job: &str) -> Result<Vec<(u32, u64, bool, PathBuf)>> {
    let mut out = vec![];
    for e in fs::read_dir(dir).map_err(ConnectorError::io("cannot list", dir))? {
        let e = e.map_err(ConnectorError::io("cannot list", dir))?;
        if let Some((sub, n, pending)) = parse_hidden(&e.file_name().to_string_lossy(), job) {
            out.push((sub, n, pending, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Appends a batch's rows to an open file in `format`.
fn write_rows(
    format: FileFormat,
    batch: &RecordBatch,
    w: &mut BufWriter<File>,
    path: &Path,
    line: &mut String,
) -> Result<()> {
    match format {
        FileFormat::Json => {
            for row in 0..batch.num_rows() {
                line.clear();
                encode_row(batch, row, line);
                line.push('\n');
                w.write_all(line.as_bytes()).map_err(ConnectorError::io("cannot write", path))?;
            }
        }
        FileFormat::Csv => {
            crate::csv_rows::write_csv(batch, &mut *w)
                .map_err(|e| ConnectorError::Encode { what: "CSV rows".into(), reason: e.to_string() })?;
        }
        FileFormat::DebeziumJson => {
            let changes = Changes::of(batch)?;
            let mut row_json = String::new();
            for row in 0..changes.num_rows() {
                row_json.clear();
                encode_row(&changes.data, row, &mut row_json);
                line.clear();
                write_debezium(&row_json, changes.kind(row)?, line);
                line.push('\n');
                w.write_all(line.as_bytes()).map_err(ConnectorError::io("cannot write", path))?;
            }
        }
    }
    Ok(())
}

impl FileSink {
    pub fn new(dir: PathBuf, format: FileFormat) -> Self {
        FileSink {
            dir,
            format,
            table: String::new(),
            partitioning: None,
            job: String::new(),
            subtask: 0,
            seq: 0,
            open: HashMap::new(),
            handles: BTreeMap::new(),
            tick: 0,
            max_open: MAX_OPEN_FILES_PER_SINK,
            created: BTreeSet::new(),
            durable: HashSet::new(),
            pending: vec![],
            line: String::new(),
            metrics: None,
        }
    }

    /// Names the table this sink writes (for error messages).
    pub fn for_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Writes each row into its partition's directory, without the partition columns (see
    /// `partitioned`); partitioning by no column is no partitioning.
    pub fn partitioned(mut self, partitioning: Partitioning) -> Self {
        self.partitioning = (!partitioning.columns.is_empty()).then_some(partitioning);
        self
    }

    fn describe(&self) -> String {
        if self.table.is_empty() {
            format!("the filesystem sink writing {}", self.dir.display())
        } else {
            format!("the filesystem sink of table {} ({})", self.table, self.dir.display())
        }
    }

    fn publish(&self, dir: &Path, pending: &Path, subtask: u32, checkpoint: u64) -> Result<()> {
        let target = dir.join(format!("part-{}-{subtask}-{checkpoint:010}.{}", self.job, self.format.extension()));
        keel_types::faults::hit("sink.commit");
        fs::rename(pending, &target).map_err(ConnectorError::io("cannot publish file", pending))?;
        Ok(())
    }

    /// After files were published into `dir`: the success file, then the directory fsync.
    fn finish_publishing(&self, dir: &Path) -> Result<()> {
        if let Some(name) = self.partitioning.as_ref().and_then(|p| p.success_file.as_deref()) {
            partitioned::write_success_file(dir, name)?;
        }
        sync_dir(dir)
    }

    /// Appends rows to the in-progress file of partition path `rel`, creating it first if needed,
    /// or opening it again, after closing the least recently written one if `max_open` are open.
    fn write(&mut self, rel: &str, batch: &RecordBatch) -> Result<()> {
        let fresh = !self.open.contains_key(rel);
        if fresh {
            let dir = if rel.is_empty() { self.dir.clone() } else { self.dir.join(rel) };
            if !rel.is_empty() && !self.durable.contains(&dir) {
                fs::create_dir_all(&dir).map_err(ConnectorError::io("cannot create partition directory", &dir))?;
                self.created.insert(dir.clone());
            }
            self.seq += 1;
            let path = dir.join(format!(".{}-{}-{}.inprogress", self.job, self.subtask, self.seq));
            self.open.insert(rel.to_string(), InProgress { path, w: None, used: 0 });
        }
        let missing = || RuntimeError::Internal("file sink: no in-progress file".into());
        if self.open.get(rel).is_some_and(|f| f.w.is_none()) {
            while self.handles.len() >= self.max_open.max(1) {
                let Some((_, victim)) = self.handles.pop_first() else { break };
                self.open.get_mut(&victim).ok_or_else(missing)?.close()?;
            }
            let f = self.open.get_mut(rel).ok_or_else(missing)?;
            let file = if fresh {
                File::create(&f.path).map_err(ConnectorError::io("cannot create", &f.path))?
            } else {
                fs::OpenOptions::new()
                    .append(true)
                    .open(&f.path)
                    .map_err(ConnectorError::io("cannot reopen", &f.path))?
            };
            let capacity = if self.partitioning.is_some() { 64 << 10 } else { 256 << 10 };
            f.w = Some(BufWriter::with_capacity(capacity, file));
        }
        self.tick += 1;
        let f = self.open.get_mut(rel).ok_or_else(missing)?;
        self.handles.remove(&f.used);
        f.used = self.tick;
        self.handles.insert(self.tick, rel.to_string());
        let w = f.w.as_mut().ok_or_else(missing)?;
        write_rows(self.format, batch, w, &f.path, &mut self.line)
    }
}

impl Operator for FileSink {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.job = ctx.job.clone();
        self.subtask = ctx.subtask;
        self.metrics = Some(ctx.metrics.clone());
        self.max_open = (MAX_OPEN_FILES_PER_SINK / ctx.parallelism.max(1) as usize).max(2);
        fs::create_dir_all(&self.dir).map_err(ConnectorError::io("cannot create sink directory", &self.dir))?;
        let depth = self.partitioning.as_ref().map_or(0, |p| p.columns.len());
        for dir in partitioned::partition_dirs(&self.dir, depth)? {
            let (mut changed, mut published) = (false, false);
            for (sub, n, pending, path) in hidden_files(&dir, &self.job)? {
                if sub % ctx.parallelism != ctx.subtask {
                    continue;
                }
                changed = true;
                if pending && restored.checkpoint.is_some_and(|c| n <= c) {
                    self.publish(&dir, &path, sub, n)?;
                    published = true;
                } else {
                    fs::remove_file(&path).map_err(ConnectorError::io("cannot delete aborted file", &path))?;
                }
            }
            if published {
                self.finish_publishing(&dir)?;
            } else if changed {
                sync_dir(&dir)?;
            }
        }
        sync_dir(&self.dir)
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        if !self.format.accepts_updates() {
            ensure_append_only(&batch, &self.describe())?;
        }
        let rows = batch.num_rows() as u64;
        let parts = match &self.partitioning {
            Some(p) => p.split(&batch)?,
            None => vec![(String::new(), batch)],
        };
        for (rel, part) in &parts {
            self.write(rel, part)?;
        }
        if let Some(m) = &self.metrics {
            Metrics::add(&m.records_out, rows);
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        let mut dirs = BTreeSet::new();
        self.handles.clear();
        for (_, file) in self.open.drain() {
            let path = file.path.clone();
            file.sync()?;
            // Invariant: an in-progress file is created inside its directory, never at a root.
            let dir =
                path.parent().ok_or_else(|| RuntimeError::Internal("file sink: file without a directory".into()))?;
            fs::rename(&path, dir.join(pending_name(&self.job, self.subtask, checkpoint)))
                .map_err(ConnectorError::io("cannot rename", &path))?;
            dirs.insert(dir.to_path_buf());
            self.pending.push((dir.to_path_buf(), checkpoint));
        }
        // A new partition directory's entry lives in its parent (up to the sink's directory).
        for created in std::mem::take(&mut self.created) {
            for parent in created.ancestors().skip(1) {
                dirs.insert(parent.to_path_buf());
                if parent == self.dir {
                    break;
                }
            }
            self.durable.insert(created);
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        Ok(None)
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        let (ready, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|(_, n)| *n <= checkpoint);
        self.pending = rest;
        let mut dirs = BTreeSet::new();
        for (dir, n) in ready {
            self.publish(&dir, &dir.join(pending_name(&self.job, self.subtask, n)), self.subtask, n)?;
            dirs.insert(dir);
        }
        for d in &dirs {
            self.finish_publishing(d)?;
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
    fn a_sink_path_that_is_a_file_is_a_user_error_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("taken");
        fs::write(&file, "not a directory").unwrap();
        for path in [file.clone(), file.join("below")] {
            let mut sink = FileSink::new(path.clone(), FileFormat::Json).for_table("out_t");
            let err = sink.open(&ctx(dir.path()), RestoredState::default()).unwrap_err();
            assert_eq!(err.class(), keel_types::ErrorClass::User, "{err}");
            assert!(err.to_string().contains(&file.display().to_string()), "{err}");
        }
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
