//! Sinks: the topic sink and the filesystem sink commit exactly once through two-phase commit;
//! the print sink writes immediately and is at-least-once (rows printed after the last
//! checkpoint are printed again after a restart).
//!
//! Filesystem sink invariants: rows of one checkpoint interval go to a hidden in-progress file
//! `.JOB-SUBTASK-SEQ.inprogress` in the target directory; at barrier `n` it is fsynced and
//! renamed to `.JOB-SUBTASK-n.pending`; when checkpoint `n` completes it is renamed to
//! `part-JOB-SUBTASK-n.EXT`, which readers see atomically. On recovery from checkpoint `c`,
//! pending files up to `c` are published, and newer or in-progress ones are deleted. Hidden files
//! (leading `.`) are never results.

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

/// Writes rows as JSON records to a topic, exactly once.
pub struct TopicSink {
    pub data_dir: PathBuf,
    pub topic: String,
    pub uid: String,
    writer: Option<StagedTopicWriter>,
    partitions: u32,
    next: u32,
    line: String,
    metrics: Option<Arc<Metrics>>,
}

impl TopicSink {
    pub fn new(data_dir: PathBuf, topic: String, uid: String) -> Self {
        TopicSink { data_dir, topic, uid, writer: None, partitions: 1, next: 0, line: String::new(), metrics: None }
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
        for row in 0..batch.num_rows() {
            self.line.clear();
            encode_row(&batch, row, &mut self.line);
            w.write(self.next, None, self.line.as_bytes())?;
            self.next = (self.next + 1) % self.partitions;
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
}

impl FileFormat {
    fn extension(self) -> &'static str {
        match self {
            FileFormat::Json => "jsonl",
            FileFormat::Csv => "csv",
        }
    }
}

/// Writes rows to files under a directory, publishing them on checkpoint completion.
pub struct FileSink {
    dir: PathBuf,
    format: FileFormat,
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
            job: String::new(),
            subtask: 0,
            seq: 0,
            current: None,
            line: String::new(),
            metrics: None,
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

/// Prints rows to standard output as `+I[v1, v2, ...]`, as Flink's print connector does.
/// At-least-once: rows printed after the last checkpoint are printed again after a restart.
pub struct PrintSink {
    pub table: String,
}

impl Operator for PrintSink {
    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut line = String::new();
        for row in 0..batch.num_rows() {
            line.clear();
            line.push_str("+I[");
            for c in 0..batch.num_columns() {
                if c > 0 {
                    line.push_str(", ");
                }
                let col = batch.column(c);
                if let arrow::datatypes::DataType::Timestamp(_, _) = col.data_type() {
                    let mut s = String::new();
                    crate::json::write_value(col.as_ref(), row, &mut s);
                    line.push_str(s.trim_matches('"'));
                } else {
                    line.push_str(&arrow::util::display::array_value_to_string(col, row).unwrap_or_default());
                }
            }
            line.push_str("]\n");
            out.write_all(line.as_bytes()).map_err(|e| {
                RuntimeError::External(format!("print sink '{}': cannot write to stdout: {e}", self.table))
            })?;
        }
        Ok(())
    }
}

/// Discards rows, counting them as written (for benchmarks and tests).
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
