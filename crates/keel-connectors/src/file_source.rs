//! The filesystem source: JSON-lines or CSV files under a directory (or one file), read once
//! (bounded: the files present when the job first started) or watched for new files.
//!
//! Invariants: each file is read by the subtask `hash(file name) mod parallelism`, whole lines at
//! a time; its position (bytes consumed) is checkpointed, so a restore neither skips nor repeats a
//! line, at any parallelism. Hidden files (names starting with `.` or `_`, such as in-progress
//! sink files) are never read. A file's watermark is the largest event time read from it minus
//! the delay; the subtask's is the minimum over its unfinished files.

use crate::error::ConnectorError;
use crate::json::JsonDecoder;
use crate::topic_source::BadRecordPolicy;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use keel_runtime::{Metrics, RestoredState, Result, RuntimeError, Source, SourcePoll, TaskContext, WatermarkStatus};
use keel_types::time::MIN_WATERMARK;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Record formats the filesystem source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSourceFormat {
    JsonLines,
    Csv { delimiter: u8 },
}

#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    pub table: String,
    pub path: PathBuf,
    pub format: FileSourceFormat,
    pub schema: SchemaRef,
    pub event_time: Option<(usize, i64)>,
    /// Bounded: exactly these files (names relative to `path`), recorded at the first start.
    pub files: Option<Vec<String>>,
    /// Watching: how often to look for new files.
    pub monitor_interval: Option<Duration>,
    pub bad_records: BadRecordPolicy,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileState {
    name: String,
    offset: u64,
    max_ts: i64,
    done: bool,
}

pub struct FileSource {
    cfg: FileSourceConfig,
    files: Vec<FileState>,
    cursor: usize,
    parallelism: u32,
    subtask: u32,
    last_scan: Option<Instant>,
    metrics: Option<Arc<Metrics>>,
}

/// Lists the readable files under `path` (a directory, or one file), sorted by name.
pub fn list_files(path: &std::path::Path) -> std::result::Result<Vec<String>, ConnectorError> {
    if path.is_file() {
        return Ok(vec![String::new()]);
    }
    let mut out = vec![];
    for e in std::fs::read_dir(path).map_err(ConnectorError::io("cannot list", path))? {
        let e = e.map_err(ConnectorError::io("cannot list", path))?;
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with('.') && !name.starts_with('_') && e.path().is_file() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

impl FileSource {
    pub fn new(cfg: FileSourceConfig) -> Self {
        FileSource { cfg, files: vec![], cursor: 0, parallelism: 1, subtask: 0, last_scan: None, metrics: None }
    }

    fn mine(&self, name: &str) -> bool {
        (keel_types::keys::hash_key(name.as_bytes()) % u64::from(self.parallelism)) as u32 == self.subtask
    }

    fn file_path(&self, name: &str) -> PathBuf {
        if name.is_empty() { self.cfg.path.clone() } else { self.cfg.path.join(name) }
    }

    /// Adds files that appeared since the last look (watching mode).
    fn discover(&mut self) -> Result<()> {
        let due = self.cfg.monitor_interval.is_some_and(|i| self.last_scan.is_none_or(|t| t.elapsed() >= i));
        if !due {
            return Ok(());
        }
        self.last_scan = Some(Instant::now());
        for name in list_files(&self.cfg.path)? {
            if self.mine(&name) && !self.files.iter().any(|f| f.name == name) {
                self.files.push(FileState { name, offset: 0, max_ts: MIN_WATERMARK, done: false });
            }
        }
        Ok(())
    }

    /// Reads the next chunk of whole lines of file `idx`: (its first byte, the bytes).
    fn read_lines(&mut self, idx: usize) -> Result<Option<(u64, Vec<u8>)>> {
        let path = self.file_path(&self.files[idx].name);
        let mut f = std::fs::File::open(&path).map_err(ConnectorError::io("cannot open", &path))?;
        let start = self.files[idx].offset;
        f.seek(SeekFrom::Start(start)).map_err(ConnectorError::io("cannot seek in", &path))?;
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf).map_err(ConnectorError::io("cannot read", &path))?;
        buf.truncate(n);
        let whole = match buf.iter().rposition(|&b| b == b'\n') {
            Some(p) => p + 1,
            // No newline: the rest of the file is one last line, unless more may be appended.
            None if n > 0 && self.cfg.monitor_interval.is_none() && n < (1 << 20) => n,
            None => 0,
        };
        if whole == 0 {
            if self.cfg.monitor_interval.is_none() {
                self.files[idx].done = true;
            }
            return Ok(None);
        }
        buf.truncate(whole);
        Ok(Some((start, buf)))
    }

    fn decode(&mut self, lines: &[&[u8]], file: &str, first_line_offset: &[u64]) -> Result<RecordBatch> {
        match self.cfg.format {
            FileSourceFormat::JsonLines => {
                let mut d = JsonDecoder::new(self.cfg.schema.clone()).map_err(RuntimeError::User)?;
                let decoded = d.decode(lines).map_err(|e| RuntimeError::Internal(format!("JSON decoder: {e}")))?;
                for (i, reason) in &decoded.bad {
                    self.bad(file, first_line_offset[*i], reason)?;
                }
                Ok(decoded.batch)
            }
            FileSourceFormat::Csv { delimiter } => {
                let mut good = vec![];
                let mut batches = vec![];
                for (i, line) in lines.iter().enumerate() {
                    let r = arrow::csv::ReaderBuilder::new(self.cfg.schema.clone())
                        .with_delimiter(delimiter)
                        .build(std::io::Cursor::new(line.to_vec()))
                        .and_then(|mut r| r.next().transpose());
                    match r {
                        Ok(Some(b)) if b.num_rows() == 1 => {
                            good.push(i);
                            batches.push(b);
                        }
                        Ok(_) => self.bad(file, first_line_offset[i], "the line holds no row")?,
                        Err(e) => self.bad(file, first_line_offset[i], &e.to_string())?,
                    }
                }
                arrow::compute::concat_batches(&self.cfg.schema, &batches).map_err(RuntimeError::arrow("CSV rows"))
            }
        }
    }

    fn bad(&self, file: &str, offset: u64, reason: &str) -> Result<()> {
        if let Some(m) = &self.metrics {
            Metrics::add(&m.bad_records, 1);
        }
        match &self.cfg.bad_records {
            BadRecordPolicy::Fail => Err(RuntimeError::User(format!(
                "table '{}': the line at byte {offset} of {} does not fit the schema: {reason}",
                self.cfg.table,
                self.file_path(file).display()
            ))),
            _ => {
                tracing::warn!(table = %self.cfg.table, file, offset, "skipping a line that does not fit the schema: {reason}");
                Ok(())
            }
        }
    }
}

impl Source for FileSource {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.parallelism = ctx.parallelism;
        self.subtask = ctx.subtask;
        self.metrics = Some(ctx.metrics.clone());
        let mut saved: Vec<FileState> = vec![];
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            let states: Vec<FileState> = serde_json::from_slice(part).map_err(|e| {
                RuntimeError::Internal(format!("file source state of '{}' is unreadable: {e}", self.cfg.table))
            })?;
            saved.extend(states);
        }
        self.files = saved.into_iter().filter(|f| self.mine(&f.name)).collect();
        if let Some(files) = self.cfg.files.clone() {
            for name in files {
                if self.mine(&name) && !self.files.iter().any(|f| f.name == name) {
                    self.files.push(FileState { name, offset: 0, max_ts: MIN_WATERMARK, done: false });
                }
            }
        }
        self.discover()
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        self.discover()?;
        let n = self.files.len();
        for _ in 0..n {
            let idx = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            if self.files[idx].done {
                continue;
            }
            let Some((start, buf)) = self.read_lines(idx)? else { continue };
            let mut lines: Vec<&[u8]> = vec![];
            let mut offsets = vec![];
            let mut at = 0usize;
            for line in buf.split(|&b| b == b'\n') {
                let here = start + at as u64;
                at += line.len() + 1;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    lines.push(line);
                    offsets.push(here);
                }
            }
            let name = self.files[idx].name.clone();
            let batch = self.decode(&lines, &name, &offsets)?;
            let f = &mut self.files[idx];
            f.offset = start + buf.len() as u64;
            if let Some((col, _)) = self.cfg.event_time
                && batch.num_rows() > 0
                && let Some(m) = crate::topic_source::max_millis(batch.column(col))?
            {
                f.max_ts = f.max_ts.max(m);
            }
            return Ok(SourcePoll::Batch(batch));
        }
        if self.cfg.monitor_interval.is_none() && self.files.iter().all(|f| f.done) {
            return Ok(SourcePoll::Exhausted);
        }
        Ok(SourcePoll::Pending)
    }

    fn watermark(&self) -> WatermarkStatus {
        let Some((_, delay)) = self.cfg.event_time else { return WatermarkStatus::Active(MIN_WATERMARK) };
        let open: Vec<i64> = self.files.iter().filter(|f| !f.done).map(|f| f.max_ts).collect();
        let wm = match open.into_iter().min() {
            Some(m) => m,
            None if self.files.is_empty() => return WatermarkStatus::Idle(MIN_WATERMARK),
            None => self.files.iter().map(|f| f.max_ts).max().unwrap_or(MIN_WATERMARK),
        };
        WatermarkStatus::Active(wm.saturating_sub(delay))
    }

    fn snapshot(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.files).map_err(|e| RuntimeError::Internal(format!("encoding file source state: {e}")))
    }
}
