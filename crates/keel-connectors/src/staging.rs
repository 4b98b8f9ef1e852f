//! Two-phase commit into a topic through staging files.
//!
//! Records written between two barriers go to per-partition in-progress files under
//! `JOB_DIR/staging/UID/SUBTASK/`. At barrier `n` (pre-commit) they are flushed, fsynced and
//! renamed to `txn-n-pP.stage`. When checkpoint `n` is complete, each staged file up to `n` is
//! appended to its partition as transaction `(producer, n)` and deleted.
//!
//! Invariants: a staged file is committed only after its checkpoint (or a later one) completed;
//! commits happen in increasing checkpoint order, and the log ignores a `(producer, n)` it already
//! has, so committing again after a crash is harmless. On recovery from checkpoint `c`, staged
//! files up to `c` are committed and everything newer (never part of a complete checkpoint) is
//! deleted. Staging directory `k` is recovered by new subtask `k % parallelism` before that
//! subtask writes anything, and subtask `j` writes only in directory `j`.

use crate::error::{ConnectorError, Result};
use keel_log::{Durability, PartitionWriter, Record, Topic, TxnOutcome};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A transactional writer of one sink subtask into one topic.
pub struct StagedTopicWriter {
    topic: Topic,
    root: PathBuf,
    dir: PathBuf,
    run_id: String,
    uid: String,
    producer: u64,
    current: HashMap<u32, BufWriter<File>>,
    writers: HashMap<u32, PartitionWriter>,
    durability: Durability,
}

fn producer_id(run_id: &str, uid: &str, subtask: u32) -> u64 {
    keel_types::keys::hash_key(format!("{run_id}\u{0}{uid}\u{0}{subtask}").as_bytes())
}

fn parse_txn_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("txn-")?.strip_suffix(".stage")?;
    let (ckpt, part) = rest.split_once("-p")?;
    Some((ckpt.parse().ok()?, part.parse().ok()?))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ConnectorError::io("cannot fsync directory", dir))
}

impl StagedTopicWriter {
    /// Opens the writer of `subtask` and recovers the staging directories it inherits.
    pub fn open(
        topic: Topic,
        job_dir: &Path,
        uid: &str,
        run_id: &str,
        subtask: u32,
        parallelism: u32,
        restored_checkpoint: Option<u64>,
    ) -> Result<Self> {
        let safe_uid: String =
            uid.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let root = job_dir.join("staging").join(safe_uid);
        let dir = root.join(subtask.to_string());
        fs::create_dir_all(&dir).map_err(ConnectorError::io("cannot create staging directory", &dir))?;
        let mut w = StagedTopicWriter {
            topic,
            root,
            dir,
            run_id: run_id.to_string(),
            uid: uid.to_string(),
            producer: producer_id(run_id, uid, subtask),
            current: HashMap::new(),
            writers: HashMap::new(),
            durability: Durability::Fsync,
        };
        w.recover(subtask, parallelism, restored_checkpoint)?;
        Ok(w)
    }

    fn recover(&mut self, subtask: u32, parallelism: u32, restored: Option<u64>) -> Result<()> {
        let entries = fs::read_dir(&self.root).map_err(ConnectorError::io("cannot list", &self.root))?;
        let mut dirs = vec![];
        for e in entries {
            let e = e.map_err(ConnectorError::io("cannot list", &self.root))?;
            if let Ok(k) = e.file_name().to_string_lossy().parse::<u32>()
                && k % parallelism == subtask
            {
                dirs.push(k);
            }
        }
        dirs.sort_unstable();
        for k in dirs {
            let dir = self.root.join(k.to_string());
            let producer = producer_id(&self.run_id, &self.uid, k);
            let mut staged = vec![];
            for e in fs::read_dir(&dir).map_err(ConnectorError::io("cannot list", &dir))? {
                let e = e.map_err(ConnectorError::io("cannot list", &dir))?;
                let name = e.file_name().to_string_lossy().to_string();
                match parse_txn_name(&name) {
                    Some((ckpt, part)) if restored.is_some_and(|c| ckpt <= c) => staged.push((ckpt, part, e.path())),
                    _ => {
                        // In progress, or pre-committed for a checkpoint that never completed.
                        fs::remove_file(e.path())
                            .map_err(ConnectorError::io("cannot delete aborted staging file", &e.path()))?;
                    }
                }
            }
            staged.sort();
            for (ckpt, part, path) in staged {
                self.commit_file(producer, ckpt, part, &path)?;
            }
        }
        Ok(())
    }

    /// `open` for the subtask described by `ctx`, restoring from checkpoint `restored`.
    pub fn for_task(topic: Topic, ctx: &keel_runtime::TaskContext, uid: &str, restored: Option<u64>) -> Result<Self> {
        Self::open(topic, &ctx.job_dir, uid, &ctx.run_id, ctx.subtask, ctx.parallelism, restored)
    }

    /// Stages one record for `partition` in the current transaction.
    pub fn write(&mut self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        let f = match self.current.get_mut(&partition) {
            Some(f) => f,
            None => {
                let path = self.dir.join(format!("current-p{partition}.stage"));
                let file = File::create(&path).map_err(ConnectorError::io("cannot create staging file", &path))?;
                self.current.entry(partition).or_insert(BufWriter::with_capacity(256 << 10, file))
            }
        };
        let io = |e| ConnectorError::Io { action: "cannot write staging file in", path: String::new(), source: e };
        match key {
            Some(k) => {
                f.write_all(&(k.len() as i32).to_le_bytes()).map_err(io)?;
                f.write_all(k).map_err(io)?;
            }
            None => f.write_all(&(-1i32).to_le_bytes()).map_err(io)?,
        }
        f.write_all(&(value.len() as u32).to_le_bytes()).map_err(io)?;
        f.write_all(value).map_err(io)?;
        Ok(())
    }

    /// Pre-commit at barrier `checkpoint`: make the current transaction's files durable.
    pub fn pre_commit(&mut self, checkpoint: u64) -> Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        for (part, f) in self.current.drain() {
            let file = f.into_inner().map_err(|e| ConnectorError::Io {
                action: "cannot flush staging file in",
                path: self.dir.display().to_string(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(ConnectorError::io("cannot fsync staging file in", &self.dir))?;
            let from = self.dir.join(format!("current-p{part}.stage"));
            let to = self.dir.join(format!("txn-{checkpoint:020}-p{part}.stage"));
            fs::rename(&from, &to).map_err(ConnectorError::io("cannot rename staging file", &from))?;
        }
        sync_dir(&self.dir)
    }

    /// Commits every staged transaction up to `checkpoint`, oldest first.
    pub fn commit_upto(&mut self, checkpoint: u64) -> Result<usize> {
        let mut staged = vec![];
        for e in fs::read_dir(&self.dir).map_err(ConnectorError::io("cannot list", &self.dir))? {
            let e = e.map_err(ConnectorError::io("cannot list", &self.dir))?;
            if let Some((ckpt, part)) = parse_txn_name(&e.file_name().to_string_lossy())
                && ckpt <= checkpoint
            {
                staged.push((ckpt, part, e.path()));
            }
        }
        staged.sort();
        let mut records = 0;
        for (ckpt, part, path) in staged {
            records += self.commit_file(self.producer, ckpt, part, &path)?;
        }
        Ok(records)
    }

    fn commit_file(&mut self, producer: u64, checkpoint: u64, partition: u32, path: &Path) -> Result<usize> {
        let file = File::open(path).map_err(ConnectorError::io("cannot open staging file", path))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let writer = match self.writers.get_mut(&partition) {
            Some(w) => w,
            None => {
                let w = self.topic.writer(partition, self.durability)?;
                self.writers.entry(partition).or_insert(w)
            }
        };
        let mut n = 0usize;
        let mut damaged = None;
        // Stream the file in chunks of about 1 MB: a large transaction never sits in memory whole.
        let mut next_chunk = || -> keel_log::Result<Option<Vec<Record>>> {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while bytes < (1 << 20) {
                match read_staged(&mut reader) {
                    Ok(Some(r)) => {
                        bytes += r.value.len() + 8;
                        chunk.push(r);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        damaged = Some(e);
                        return Err(keel_log::LogError::Io {
                            action: "cannot read staging file",
                            path: path.to_path_buf(),
                            source: std::io::Error::other("damaged"),
                        });
                    }
                }
            }
            n += chunk.len();
            Ok(if chunk.is_empty() { None } else { Some(chunk) })
        };
        let outcome = writer.commit_txn_stream(producer, checkpoint, &mut next_chunk);
        if let Some(e) = damaged {
            return Err(ConnectorError::Damaged(format!(
                "staging file {} is damaged ({e}); it was fsynced before its checkpoint completed, so the disk lost data",
                path.display()
            )));
        }
        match outcome? {
            TxnOutcome::Committed { .. } => {}
            TxnOutcome::AlreadyCommitted => {
                tracing::info!(
                    "transaction {checkpoint} of {} to partition {partition} was already committed",
                    self.uid
                )
            }
        }
        keel_types::faults::hit("sink.commit");
        fs::remove_file(path).map_err(ConnectorError::io("cannot delete committed staging file", path))?;
        Ok(n)
    }
}

/// Reads one staged record; `None` at a clean end of file.
fn read_staged(r: &mut impl std::io::Read) -> std::result::Result<Option<Record>, String> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let kl = i32::from_le_bytes(len);
    let key = if kl < 0 {
        None
    } else {
        let mut k = vec![0u8; kl as usize];
        r.read_exact(&mut k).map_err(|e| format!("truncated key: {e}"))?;
        Some(k)
    };
    r.read_exact(&mut len).map_err(|e| format!("truncated record: {e}"))?;
    let mut v = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut v).map_err(|e| format!("truncated value: {e}"))?;
    Ok(Some(Record::new(key, v)))
}

/// Late rows (or other rows an operator cannot use) written to a dead-letter topic exactly once,
/// as JSON: `{"table": ..., "error": reason, "record": {the row's columns}}`.
pub struct DeadLetterOutput {
    pub table: String,
    pub writer: StagedTopicWriter,
}

impl keel_runtime::SideOutput for DeadLetterOutput {
    fn emit(&mut self, rows: &arrow::array::RecordBatch, reason: &str) -> keel_runtime::Result<()> {
        let mut record = String::new();
        for r in 0..rows.num_rows() {
            record.clear();
            crate::json::encode_row(rows, r, &mut record);
            let letter = format!(
                "{{\"table\":{},\"error\":{},\"record\":{record}}}",
                serde_json::Value::from(self.table.as_str()),
                serde_json::Value::from(reason)
            );
            self.writer.write(0, None, letter.as_bytes())?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: u64) -> keel_runtime::Result<()> {
        Ok(self.writer.pre_commit(checkpoint)?)
    }

    fn commit(&mut self, checkpoint: u64) -> keel_runtime::Result<()> {
        self.writer.commit_upto(checkpoint)?;
        Ok(())
    }
}
