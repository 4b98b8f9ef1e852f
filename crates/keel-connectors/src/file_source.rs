//! The filesystem source: JSON-lines, CSV or Parquet files under a directory (or one file), read
//! once (bounded: the files present when the job first started) or watched for new files.
//!
//! Invariants: each file is read by the subtask `hash(file name) mod parallelism`; its position
//! is checkpointed (bytes and lines consumed for the line formats, whole lines at a time; rows
//! consumed for Parquet), so a restore neither skips nor repeats a line or row, at any
//! parallelism. Hidden files (names starting with `.` or `_`, such as in-progress sink files) are
//! never read. A file's watermark is the largest event time read from it minus the delay; the
//! subtask's is the minimum over its unfinished files.
//!
//! A line that does not fit the schema, or is longer than `MAX_LINE_BYTES`, is handled by the
//! bad-records policy: it fails the job (naming file and line), is skipped (counted), or is
//! written with its error, file and line to the dead-letter topic (a bounded prefix of it, see
//! `dead_letter`) through a staged writer that is pre-committed with the positions at each
//! barrier and committed when the checkpoint completes, so each bad line lands there exactly once.
//! Memory per subtask is bounded: a chunk of lines is at most `MAX_LINE_BYTES` plus one read, and
//! an over-long line is scanned for its newline a read at a time, keeping only its prefix.
//!
//! Line files may grow while watched (only whole lines are read); Parquet files are immutable
//! once visible (write them under a hidden name and rename), read one at a time with the reader
//! kept open until the file ends. When watching, a Parquet file whose footer cannot be read yet
//! is retried on later polls.

mod parquet_file;

use crate::error::ConnectorError;
use crate::json::JsonDecoder;
use crate::staging::StagedTopicWriter;
use crate::topic_source::BadRecordPolicy;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use keel_log::{Log, TopicConfig};
use keel_runtime::{Metrics, RestoredState, Result, RuntimeError, Source, SourcePoll, TaskContext, WatermarkStatus};
use keel_types::time::MIN_WATERMARK;
use parquet_file::{OpenError, ParquetCursor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest line the filesystem source reads, in bytes without its newline: 16 MiB. A longer
/// line is a bad record (by the 'bad-records' policy; its dead letter holds a prefix of it, with
/// file, line and byte offset) and reading goes on after its newline; no more than this much of
/// one line is ever held in memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// How much of a file is read at a time.
const READ_BYTES: usize = 1 << 20;

/// Record formats the filesystem source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSourceFormat {
    JsonLines,
    Csv {
        delimiter: u8,
    },
    /// Columns matched to the table's by name and cast to its types.
    Parquet,
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
    /// For lines that do not fit the schema (JSON lines and CSV; Parquet columns are checked
    /// against the schema when a file is opened).
    pub bad_records: BadRecordPolicy,
    /// The source's operator uid: names the staging directory of its dead letters, so it must be
    /// unique within the job and the same at every restart.
    pub uid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileState {
    name: String,
    /// Bytes consumed (JSON lines, CSV) or rows consumed (Parquet).
    offset: u64,
    /// Lines consumed (JSON lines, CSV); absent in checkpoints written before lines were counted,
    /// then counted again from the file when it is next read.
    #[serde(default)]
    line: Option<u64>,
    max_ts: i64,
    done: bool,
    /// While watching: the line at `offset` is longer than `MAX_LINE_BYTES` and has no newline
    /// before this byte yet (where the search for it goes on; not checkpointed).
    #[serde(skip)]
    scanned: Option<u64>,
}

impl FileState {
    fn new(name: String) -> Self {
        FileState { name, offset: 0, line: Some(0), max_ts: MIN_WATERMARK, done: false, scanned: None }
    }
}

/// What `read_lines` found next in a file.
enum Chunk {
    /// Whole lines: the offset of the first one's first byte, and their bytes (each line ends in
    /// a newline, except maybe the file's last).
    Lines(u64, Vec<u8>),
    /// A line longer than `MAX_LINE_BYTES`: its first byte, its length without the newline, its
    /// first bytes (for the dead letter) and the offset after its newline.
    TooLong { start: u64, len: u64, head: Vec<u8>, next: u64 },
}

/// The Parquet file being read: its index in `files` and its open reader.
struct OpenParquet {
    idx: usize,
    cursor: ParquetCursor,
}

pub struct FileSource {
    cfg: FileSourceConfig,
    files: Vec<FileState>,
    cursor: usize,
    parallelism: u32,
    subtask: u32,
    last_scan: Option<Instant>,
    metrics: Option<Arc<Metrics>>,
    dead_letters: Option<(StagedTopicWriter, DeadLetterClaim)>,
    parquet: Option<OpenParquet>,
    /// Parquet files found unreadable while watching (warned about once; retried).
    unreadable: HashSet<String>,
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

/// Dead-letter staging directories open in this process. Two sources of one job sharing one
/// (two INSERTs reading the same table, while the planner gives them the same uid) would mix
/// their transactions; the second to open fails instead.
static OPEN_DEAD_LETTERS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Holds a dead-letter staging directory for one subtask until dropped.
struct DeadLetterClaim(String);

impl DeadLetterClaim {
    fn take(key: String, table: &str) -> Result<Self> {
        let mut open = OPEN_DEAD_LETTERS.lock().unwrap_or_else(|p| p.into_inner());
        if !open.insert(key.clone()) {
            return Err(RuntimeError::User(format!(
                "table '{table}' is read by two INSERTs with 'bad-records' = 'dead-letter', which would share one \
                 dead-letter writer; read it in one INSERT, or use 'skip' or 'fail'"
            )));
        }
        Ok(DeadLetterClaim(key))
    }
}

impl Drop for DeadLetterClaim {
    fn drop(&mut self) {
        OPEN_DEAD_LETTERS.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// A non-blank line of a chunk: its number (1-based), first byte, and text (all of it, or the
/// start of an over-long line, whose length is `bytes`).
struct Line<'a> {
    number: u64,
    offset: u64,
    text: &'a [u8],
    bytes: u64,
}

impl FileSource {
    pub fn new(cfg: FileSourceConfig) -> Self {
        FileSource {
            cfg,
            files: vec![],
            cursor: 0,
            parallelism: 1,
            subtask: 0,
            last_scan: None,
            metrics: None,
            dead_letters: None,
            parquet: None,
            unreadable: HashSet::new(),
        }
    }

    fn mine(&self, name: &str) -> bool {
        (keel_types::keys::hash_key(name.as_bytes()) % u64::from(self.parallelism)) as u32 == self.subtask
    }

    fn file_path(&self, name: &str) -> PathBuf {
        if name.is_empty() { self.cfg.path.clone() } else { self.cfg.path.join(name) }
    }

    fn is_parquet(&self) -> bool {
        self.cfg.format == FileSourceFormat::Parquet
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
                self.files.push(FileState::new(name));
            }
        }
        Ok(())
    }

    /// Reads the next chunk of whole lines of file `idx`, or the over-long line that comes next.
    fn read_lines(&mut self, idx: usize) -> Result<Option<Chunk>> {
        let path = self.file_path(&self.files[idx].name);
        let mut f = std::fs::File::open(&path).map_err(ConnectorError::io("cannot open", &path))?;
        let start = self.files[idx].offset;
        f.seek(SeekFrom::Start(start)).map_err(ConnectorError::io("cannot seek in", &path))?;
        if let Some(scanned) = self.files[idx].scanned {
            // Still looking for the newline of an over-long line (watching).
            let mut head = Vec::with_capacity(crate::dead_letter::MAX_RECORD_BYTES);
            (&mut f)
                .take(crate::dead_letter::MAX_RECORD_BYTES as u64)
                .read_to_end(&mut head)
                .map_err(ConnectorError::io("cannot read", &path))?;
            f.seek(SeekFrom::Start(scanned)).map_err(ConnectorError::io("cannot seek in", &path))?;
            return self.skip_long_line(idx, f, start, head, scanned);
        }
        let mut buf = Vec::with_capacity(READ_BYTES);
        let mut limit = READ_BYTES;
        loop {
            let want = (limit - buf.len()) as u64;
            (&mut f).take(want).read_to_end(&mut buf).map_err(ConnectorError::io("cannot read", &path))?;
            let eof = buf.len() < limit;
            if let Some(p) = buf.iter().rposition(|&b| b == b'\n') {
                buf.truncate(p + 1);
                return Ok(Some(Chunk::Lines(start, buf)));
            }
            if !eof {
                if buf.len() > MAX_LINE_BYTES {
                    // One line longer than the limit: keep its start, look for its end.
                    let scanned = start + buf.len() as u64;
                    buf.truncate(crate::dead_letter::MAX_RECORD_BYTES);
                    buf.shrink_to_fit();
                    return self.skip_long_line(idx, f, start, buf, scanned);
                }
                // One line longer than what was read: read more of it.
                limit = (limit * 2).min(MAX_LINE_BYTES + 1);
                continue;
            }
            // No newline before the end: the rest of the file is one last line, unless more may
            // be appended (a watched directory), in which case it waits for its newline.
            if !buf.is_empty() && self.cfg.monitor_interval.is_none() {
                return Ok(Some(Chunk::Lines(start, buf)));
            }
            if self.cfg.monitor_interval.is_none() {
                self.files[idx].done = true;
            }
            return Ok(None);
        }
    }

    /// Reads on from `from` (where `f` is) to the newline ending the over-long line that starts
    /// at `start`, a read at a time. At the end of the file the line ends there, unless the
    /// directory is watched: then it is not finished yet, and the search resumes at the next poll.
    fn skip_long_line(
        &mut self,
        idx: usize,
        mut f: std::fs::File,
        start: u64,
        head: Vec<u8>,
        from: u64,
    ) -> Result<Option<Chunk>> {
        let path = self.file_path(&self.files[idx].name);
        let mut buf = vec![0u8; READ_BYTES];
        let mut at = from;
        loop {
            let n = f.read(&mut buf).map_err(ConnectorError::io("cannot read", &path))?;
            if n == 0 {
                if self.cfg.monitor_interval.is_some() {
                    self.files[idx].scanned = Some(at);
                    return Ok(None);
                }
                return Ok(Some(Chunk::TooLong { start, len: at - start, head, next: at }));
            }
            if let Some(p) = buf[..n].iter().position(|&b| b == b'\n') {
                let end = at + p as u64;
                return Ok(Some(Chunk::TooLong { start, len: end - start, head, next: end + 1 }));
            }
            at += n as u64;
        }
    }

    /// Lines consumed of file `idx`, counted from the file if the checkpoint did not record them.
    fn lines_consumed(&mut self, idx: usize) -> Result<u64> {
        if let Some(n) = self.files[idx].line {
            return Ok(n);
        }
        let path = self.file_path(&self.files[idx].name);
        let mut f =
            std::fs::File::open(&path).map_err(ConnectorError::io("cannot open", &path))?.take(self.files[idx].offset);
        // Counted a read at a time: the consumed part of a file may be larger than memory.
        let (mut n, mut last) = (0u64, b'\n');
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            let got = f.read(&mut buf).map_err(ConnectorError::io("cannot read", &path))?;
            if got == 0 {
                break;
            }
            n += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
            last = buf[got - 1];
        }
        let n = n + u64::from(last != b'\n');
        self.files[idx].line = Some(n);
        Ok(n)
    }

    /// The next chunk of whole lines of file `idx`, decoded (bad lines handled by the policy).
    fn poll_lines(&mut self, idx: usize) -> Result<Option<RecordBatch>> {
        let first = self.lines_consumed(idx)?;
        let (start, buf) = match self.read_lines(idx)? {
            None => return Ok(None),
            Some(Chunk::Lines(start, buf)) => (start, buf),
            Some(Chunk::TooLong { start, len, head, next }) => {
                let line = Line { number: first + 1, offset: start, text: &head, bytes: len };
                let reason = format!(
                    "the line is {len} bytes long, longer than the limit of {MAX_LINE_BYTES} bytes (16 MiB) per \
                     line; split the record or write it to a topic"
                );
                let name = self.files[idx].name.clone();
                self.bad(&name, &line, &reason)?;
                let f = &mut self.files[idx];
                f.offset = next;
                f.line = Some(first + 1);
                f.scanned = None;
                return Ok(Some(RecordBatch::new_empty(self.cfg.schema.clone())));
            }
        };
        let mut lines = vec![];
        let mut at = 0usize;
        let mut number = first;
        for text in buf.split(|&b| b == b'\n') {
            if at >= buf.len() {
                break; // the empty piece after the final newline
            }
            number += 1;
            let offset = start + at as u64;
            at += text.len() + 1;
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if !text.iter().all(u8::is_ascii_whitespace) {
                lines.push(Line { number, offset, text, bytes: text.len() as u64 });
            }
        }
        let name = self.files[idx].name.clone();
        let batch = self.decode(&lines, &name)?;
        let f = &mut self.files[idx];
        f.offset = start + buf.len() as u64;
        f.line = Some(number);
        Ok(Some(batch))
    }

    fn decode(&mut self, lines: &[Line<'_>], file: &str) -> Result<RecordBatch> {
        match self.cfg.format {
            FileSourceFormat::JsonLines => {
                let mut d = JsonDecoder::new(self.cfg.schema.clone()).map_err(RuntimeError::User)?;
                let texts: Vec<&[u8]> = lines.iter().map(|l| l.text).collect();
                let decoded = d.decode(&texts).map_err(|e| RuntimeError::Internal(format!("JSON decoder: {e}")))?;
                for (i, reason) in &decoded.bad {
                    self.bad(file, &lines[*i], reason)?;
                }
                Ok(decoded.batch)
            }
            FileSourceFormat::Csv { delimiter } => {
                // A number no DECIMAL can take is refused before Arrow's parser sees it.
                let guarded = crate::numbers::has_decimal(&self.cfg.schema)
                    && lines.iter().any(|l| crate::numbers::huge_exponent_csv(l.text, delimiter).is_some());
                // All lines through one reader; only when that fails (a bad line somewhere) are
                // they read one by one, to tell the bad ones from the good.
                if !guarded && let Some(b) = self.decode_csv_whole(lines, delimiter) {
                    return Ok(b);
                }
                let mut batches = vec![];
                for line in lines {
                    if guarded && let Some(reason) = crate::numbers::huge_exponent_csv(line.text, delimiter) {
                        self.bad(file, line, &reason)?;
                        continue;
                    }
                    let r = keel_types::guard::no_panic("the CSV decoder", || {
                        arrow::csv::ReaderBuilder::new(self.cfg.schema.clone())
                            .with_delimiter(delimiter)
                            .build(std::io::Cursor::new(line.text.to_vec()))
                            .and_then(|mut r| r.next().transpose())
                            .map_err(|e| e.to_string())
                    })
                    .and_then(|r| r);
                    match r {
                        Ok(Some(b)) if b.num_rows() == 1 => batches.push(b),
                        Ok(_) => self.bad(file, line, "the line holds no row")?,
                        Err(e) => self.bad(file, line, &e)?,
                    }
                }
                arrow::compute::concat_batches(&self.cfg.schema, &batches).map_err(RuntimeError::arrow("CSV rows"))
            }
            FileSourceFormat::Parquet => Err(RuntimeError::Internal("Parquet files are not read as lines".into())),
        }
    }

    /// Every line decoded by one CSV reader, or `None` when any line does not fit the schema.
    fn decode_csv_whole(&self, lines: &[Line<'_>], delimiter: u8) -> Option<RecordBatch> {
        let mut text = Vec::with_capacity(lines.iter().map(|l| l.text.len() + 1).sum());
        for line in lines {
            text.extend_from_slice(line.text);
            text.push(b'\n');
        }
        // A panic in the decoder makes this `None`: the lines are then read one by one.
        let batches = keel_types::guard::no_panic("the CSV decoder", || {
            let reader = arrow::csv::ReaderBuilder::new(self.cfg.schema.clone())
                .with_delimiter(delimiter)
                .with_batch_size(lines.len().max(1))
                .build(std::io::Cursor::new(text))
                .ok()?;
            reader.collect::<std::result::Result<Vec<_>, _>>().ok()
        })
        .ok()??;
        let batch = arrow::compute::concat_batches(&self.cfg.schema, &batches).ok()?;
        (batch.num_rows() == lines.len()).then_some(batch)
    }

    /// Routes a line that does not fit the schema by the bad-records policy.
    fn bad(&mut self, file: &str, line: &Line<'_>, reason: &str) -> Result<()> {
        if let Some(m) = &self.metrics {
            Metrics::add(&m.bad_records, 1);
        }
        let path = self.file_path(file).display().to_string();
        match &self.cfg.bad_records {
            BadRecordPolicy::Fail => Err(RuntimeError::User(format!(
                "table '{}': line {} (byte {}) of {path} does not fit the schema: {} \
                 ('bad-records' = 'fail'; use 'dead-letter' or 'skip' to keep going)",
                self.cfg.table,
                line.number,
                line.offset,
                crate::dead_letter::bounded_reason(reason)
            ))),
            BadRecordPolicy::Skip => {
                tracing::debug!(table = %self.cfg.table, file = %path, line = line.number, "skipping a bad line: {reason}");
                Ok(())
            }
            BadRecordPolicy::DeadLetter { .. } => {
                let mut place = serde_json::Map::new();
                place.insert("table".into(), self.cfg.table.clone().into());
                place.insert("file".into(), path.into());
                place.insert("line".into(), line.number.into());
                place.insert("offset".into(), line.offset.into());
                let letter = crate::dead_letter::letter(place, reason, line.text, line.bytes);
                let (dl, _) = self
                    .dead_letters
                    .as_mut()
                    .ok_or_else(|| RuntimeError::Internal("dead-letter writer not open".into()))?;
                dl.write(0, None, &letter).map_err(RuntimeError::from)
            }
        }
    }

    /// The next rows of Parquet file `idx`; `None` when it has no more (it is then done) or,
    /// while watching, cannot be read yet.
    fn poll_parquet(&mut self, idx: usize) -> Result<Option<RecordBatch>> {
        if self.parquet.as_ref().is_none_or(|p| p.idx != idx) {
            self.parquet = None;
            let name = self.files[idx].name.clone();
            let path = self.file_path(&name);
            match ParquetCursor::open(&path, &self.cfg.table, &self.cfg.schema, self.files[idx].offset) {
                Ok(cursor) => {
                    self.unreadable.remove(&name);
                    self.parquet = Some(OpenParquet { idx, cursor });
                }
                Err(OpenError::Unreadable(msg)) if self.cfg.monitor_interval.is_some() => {
                    if self.unreadable.insert(name) {
                        tracing::warn!(
                            "{msg}; trying again later (write Parquet files under a hidden name and rename)"
                        );
                    }
                    return Ok(None);
                }
                Err(OpenError::Unreadable(msg)) => return Err(RuntimeError::User(msg)),
                Err(OpenError::Other(e)) => return Err(e),
            }
        }
        let Some(open) = self.parquet.as_mut() else { return Ok(None) };
        match open.cursor.next_batch(&self.cfg.table)? {
            Some(batch) => {
                self.files[idx].offset += batch.num_rows() as u64;
                Ok(Some(batch))
            }
            None => {
                self.parquet = None;
                self.files[idx].done = true;
                Ok(None)
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
                    self.files.push(FileState::new(name));
                }
            }
        }
        if let BadRecordPolicy::DeadLetter { topic } = &self.cfg.bad_records
            && !self.is_parquet()
        {
            let uid = format!("{}-dead-letters", self.cfg.uid);
            let claim = DeadLetterClaim::take(
                format!("{}\u{0}{uid}\u{0}{}", ctx.job_dir.display(), ctx.subtask),
                &self.cfg.table,
            )?;
            let log = Log::open(&ctx.data_dir).map_err(ConnectorError::from)?;
            let dl = log.topic_or_create(topic, TopicConfig::new(1)).map_err(ConnectorError::from)?;
            self.dead_letters = Some((StagedTopicWriter::for_task(dl, ctx, &uid, restored.checkpoint)?, claim));
        }
        self.discover()
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        self.discover()?;
        let n = self.files.len();
        for _ in 0..n {
            let idx = self.cursor;
            let batch = if self.files[idx].done {
                None
            } else if self.is_parquet() {
                self.poll_parquet(idx)?
            } else {
                self.poll_lines(idx)?
            };
            // Line files take turns chunk by chunk; a Parquet file is read to its end first.
            if batch.is_none() || !self.is_parquet() {
                self.cursor = (idx + 1) % n;
            }
            let Some(batch) = batch else { continue };
            if let Some((col, _)) = self.cfg.event_time
                && batch.num_rows() > 0
                && let Some(m) = crate::topic_source::max_millis(batch.column(col))?
            {
                self.files[idx].max_ts = self.files[idx].max_ts.max(m);
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

    fn snapshot(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        if let Some((dl, _)) = &mut self.dead_letters {
            dl.pre_commit(checkpoint)?;
        }
        serde_json::to_vec(&self.files).map_err(|e| RuntimeError::Internal(format!("encoding file source state: {e}")))
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        if let Some((dl, _)) = &mut self.dead_letters {
            dl.commit_upto(checkpoint)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
