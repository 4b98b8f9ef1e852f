//! Two-phase commit into a topic through staging files.
//!
//! Records written between two barriers go to per-partition in-progress files under
//! `JOB_DIR/staging/UID/SUBTASK/`. At barrier `n` (pre-commit) they are flushed, fsynced and
//! renamed to `txn-n-pP.stage2`. When checkpoint `n` is complete, each staged file up to `n` is
//! appended to its partition as transaction `(producer, n)` and deleted. The file format (a
//! CRC per record and a footer, so damage and a cut are found before anything is committed; the
//! `.stage` files of Keel 0.1 without them) is in `stage_file.rs`.
//!
//! Invariants: a staged file is committed only after its checkpoint (or a later one) completed;
//! commits happen in increasing checkpoint order, and the log ignores a `(producer, n)` it already
//! has, so committing again after a crash is harmless. On recovery from checkpoint `c`, staged
//! files up to `c` are committed and everything newer (never part of a complete checkpoint) is
//! deleted. Staging directory `k` is recovered by new subtask `k % parallelism` before that
//! subtask writes anything, and subtask `j` writes only in directory `j`. A record larger than the
//! topic accepts is refused when it is staged (a user error), never found at commit time, when a
//! retry could only fail again. A staged file found damaged at commit is kept where it is and
//! nothing of it is committed (the log cuts the failed transaction back); the job stops with an
//! error naming the file, the record and what it means.

use crate::error::{ConnectorError, Result};
use crate::stage_file::{StageReader, StageWriter, Version};
use keel_log::{Durability, PartitionWriter, Record, Topic, TxnOutcome};
use std::collections::HashMap;
use std::fs::{self, File};

use std::path::{Path, PathBuf};

/// A transactional writer of one sink subtask into one topic.
pub struct StagedTopicWriter {
    topic: Topic,
    root: PathBuf,
    dir: PathBuf,
    run_id: String,
    uid: String,
    producer: u64,
    current: HashMap<u32, StageWriter>,
    writers: HashMap<u32, PartitionWriter>,
    durability: Durability,
}

fn producer_id(run_id: &str, uid: &str, subtask: u32) -> u64 {
    keel_types::keys::hash_key(format!("{run_id}\u{0}{uid}\u{0}{subtask}").as_bytes())
}

/// A staged transaction's checkpoint, partition and format, from its file name.
fn parse_txn_name(name: &str) -> Option<(u64, u32, Version)> {
    let (version, stem) = Version::of(name)?;
    let (ckpt, part) = stem.strip_prefix("txn-")?.split_once("-p")?;
    Some((ckpt.parse().ok()?, part.parse().ok()?, version))
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
                    Some((ckpt, part, v)) if restored.is_some_and(|c| ckpt <= c) => {
                        staged.push((ckpt, part, v, e.path()))
                    }
                    _ => {
                        // In progress, or pre-committed for a checkpoint that never completed.
                        fs::remove_file(e.path())
                            .map_err(ConnectorError::io("cannot delete aborted staging file", &e.path()))?;
                    }
                }
            }
            staged.sort_by_key(|s| (s.0, s.1));
            for (ckpt, part, version, path) in staged {
                self.commit_file(producer, ckpt, part, version, &path)?;
            }
        }
        Ok(())
    }

    /// `open` for the subtask described by `ctx`, restoring from checkpoint `restored`.
    pub fn for_task(topic: Topic, ctx: &keel_runtime::TaskContext, uid: &str, restored: Option<u64>) -> Result<Self> {
        Self::open(topic, &ctx.job_dir, uid, &ctx.run_id, ctx.subtask, ctx.parallelism, restored)
    }

    /// The largest record (key plus value bytes) the target topic accepts.
    pub fn max_record_bytes(&self) -> u64 {
        self.topic.config().max_message_bytes
    }

    /// Stages one record for `partition` in the current transaction. A record larger than the
    /// topic accepts is refused here (a user error), before anything of it is staged.
    pub fn write(&mut self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        let size = (key.map_or(0, <[u8]>::len) + value.len()) as u64;
        if size > self.max_record_bytes() {
            return Err(ConnectorError::Config(format!(
                "a row of {size} bytes is larger than topic '{}' accepts ({} bytes, its max-message-bytes); \
                 write it to a topic created with a larger `keel topic create --max-message-bytes`, or make the \
                 row smaller",
                self.topic.name(),
                self.max_record_bytes()
            )));
        }
        let f = match self.current.get_mut(&partition) {
            Some(f) => f,
            None => {
                let path = self.dir.join(format!("current-p{partition}{}", Version::V2.suffix()));
                let file = File::create(&path).map_err(ConnectorError::io("cannot create staging file", &path))?;
                let w = StageWriter::create(file).map_err(ConnectorError::io("cannot write staging file", &path))?;
                self.current.entry(partition).or_insert(w)
            }
        };
        f.write(key, value).map_err(ConnectorError::io("cannot write staging file in", &self.dir))
    }

    /// Stages a dead letter (a JSON object with a `record` field, `crate::dead_letter`) for
    /// partition 0; one too large for the topic (created with a smaller limit than the letters
    /// need) has its `record` cut to a prefix that fits, with `record_truncated` giving the
    /// record's full length in bytes, so that a bad record never stops the job.
    pub fn write_letter(&mut self, letter: Vec<u8>) -> Result<()> {
        let limit = self.max_record_bytes() as usize;
        if letter.len() <= limit {
            return self.write(0, None, &letter);
        }
        let mut letter: serde_json::Value = serde_json::from_slice(&letter)
            .map_err(|e| ConnectorError::Encode { what: "a dead letter".into(), reason: e.to_string() })?;
        let record = match letter.get("record") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let full = record.len();
        // What the letter needs besides the record, with room for JSON escapes of the prefix.
        letter["record"] = serde_json::Value::from("");
        letter["record_truncated"] = serde_json::Value::from(full);
        let room = limit.saturating_sub(letter.to_string().len()) / 6;
        let mut cut = room.min(full);
        while !record.is_char_boundary(cut) {
            cut -= 1;
        }
        letter["record"] = serde_json::Value::from(&record[..cut]);
        // A topic made with a very small limit: the reason is cut too, down to nothing.
        let mut text = letter.to_string();
        if text.len() > limit
            && let Some(reason) = letter.get("error").and_then(|e| e.as_str()).map(str::to_string)
        {
            let mut keep = reason.len();
            while text.len() > limit && keep > 0 {
                keep /= 2;
                while !reason.is_char_boundary(keep) {
                    keep -= 1;
                }
                letter["error"] = serde_json::Value::from(&reason[..keep]);
                text = letter.to_string();
            }
        }
        if text.len() > limit {
            return Err(ConnectorError::Config(format!(
                "dead-letter topic '{}' takes records of at most {limit} bytes, too few for any dead letter (its \
                 table and position alone take {}); create it with a larger `keel topic create --max-message-bytes`",
                self.topic.name(),
                text.len()
            )));
        }
        self.write(0, None, text.as_bytes())
    }

    /// Pre-commit at barrier `checkpoint`: make the current transaction's files durable.
    pub fn pre_commit(&mut self, checkpoint: u64) -> Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        for (part, f) in self.current.drain() {
            let file = f.finish().map_err(ConnectorError::io("cannot flush staging file in", &self.dir))?;
            file.sync_all().map_err(ConnectorError::io("cannot fsync staging file in", &self.dir))?;
            let suffix = Version::V2.suffix();
            let from = self.dir.join(format!("current-p{part}{suffix}"));
            let to = self.dir.join(format!("txn-{checkpoint:020}-p{part}{suffix}"));
            fs::rename(&from, &to).map_err(ConnectorError::io("cannot rename staging file", &from))?;
        }
        sync_dir(&self.dir)
    }

    /// Commits every staged transaction up to `checkpoint`, oldest first.
    pub fn commit_upto(&mut self, checkpoint: u64) -> Result<usize> {
        let mut staged = vec![];
        for e in fs::read_dir(&self.dir).map_err(ConnectorError::io("cannot list", &self.dir))? {
            let e = e.map_err(ConnectorError::io("cannot list", &self.dir))?;
            if let Some((ckpt, part, version)) = parse_txn_name(&e.file_name().to_string_lossy())
                && ckpt <= checkpoint
            {
                staged.push((ckpt, part, version, e.path()));
            }
        }
        staged.sort_by_key(|s| (s.0, s.1));
        let mut records = 0;
        for (ckpt, part, version, path) in staged {
            records += self.commit_file(self.producer, ckpt, part, version, &path)?;
        }
        Ok(records)
    }

    fn commit_file(
        &mut self,
        producer: u64,
        checkpoint: u64,
        partition: u32,
        version: Version,
        path: &Path,
    ) -> Result<usize> {
        let damage = |e: String| {
            ConnectorError::Damaged(format!(
                "staging file {} is damaged ({e}): it holds the output of checkpoint {checkpoint} for topic '{}' \
                 partition {partition}, and was fsynced before that checkpoint completed, so the disk changed it. \
                 Nothing of it was committed and the file is kept. Restore it from a backup and run the job again; \
                 or move it out of the staging directory to go on without that output (those rows are then lost)",
                path.display(),
                self.topic.name()
            ))
        };
        let mut reader = StageReader::open(path, version).map_err(damage)?;
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
                match reader.next_record() {
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
            return Err(damage(e));
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

/// Late rows (or other rows an operator cannot use) written to a dead-letter topic exactly once,
/// as JSON: `{"table": ..., "error": reason, "record": {the row's columns}}`; a row whose JSON is
/// longer than `dead_letter::MAX_RECORD_BYTES` is kept as a prefix of its text instead, marked
/// `record_truncated`, so that one wide late row never stops the job.
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
            if record.len() <= crate::dead_letter::MAX_RECORD_BYTES {
                self.writer.write_letter(letter.into_bytes())?;
            } else {
                let mut place = serde_json::Map::new();
                place.insert("table".into(), self.table.clone().into());
                let letter = crate::dead_letter::letter(place, reason, record.as_bytes(), record.len() as u64);
                self.writer.write_letter(letter)?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use keel_log::{Log, TopicConfig};

    fn topic(dir: &Path, limit: u64) -> Topic {
        let mut config = TopicConfig::new(1);
        config.max_message_bytes = limit;
        Log::open(dir).unwrap().create_topic("out", config).unwrap()
    }

    fn values(topic: &Topic) -> Vec<String> {
        let mut r = topic.reader(0, 0).unwrap();
        let mut out = vec![];
        while let Some(c) = r.read(1 << 20).unwrap() {
            c.for_each(|rec| out.push(String::from_utf8(rec.value.to_vec()).unwrap())).unwrap();
        }
        out
    }

    fn staged_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_flipped_byte_in_a_staged_file_commits_nothing_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = topic(dir.path(), 1 << 20);
        let job = dir.path().join("job");
        let mut w = StagedTopicWriter::open(t.clone(), &job, "sink", "run", 0, 1, None).unwrap();
        for i in 0..100 {
            w.write(0, Some(format!("k{i}").as_bytes()), format!("value {i}").as_bytes()).unwrap();
        }
        w.pre_commit(1).unwrap();
        let staged = staged_files(&job.join("staging/sink/0"));
        assert_eq!(staged.len(), 1);
        let mut bytes = fs::read(&staged[0]).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x04;
        fs::write(&staged[0], &bytes).unwrap();
        let err = w.commit_upto(1).unwrap_err();
        assert_eq!(err.class(), keel_types::ErrorClass::Damaged);
        let msg = err.to_string();
        assert!(msg.contains("fails its CRC32C") && msg.contains("checkpoint 1") && msg.contains("is kept"), "{msg}");
        assert!(values(&t).is_empty(), "nothing of a damaged transaction is committed");
        assert_eq!(fs::read(&staged[0]).unwrap(), bytes, "the damaged file stays as it was");
        // Restored from a backup, it commits whole.
        bytes[at] ^= 0x04;
        fs::write(&staged[0], &bytes).unwrap();
        assert_eq!(w.commit_upto(1).unwrap(), 100);
        assert_eq!(values(&t).len(), 100);
    }

    #[test]
    fn a_staged_file_of_keel_0_1_without_checksums_still_commits() {
        let dir = tempfile::tempdir().unwrap();
        let t = topic(dir.path(), 1 << 20);
        let job = dir.path().join("job");
        let stage = job.join("staging/sink/0");
        fs::create_dir_all(&stage).unwrap();
        let mut old = vec![];
        for v in ["a", "bc"] {
            old.extend_from_slice(&(-1i32).to_le_bytes());
            old.extend_from_slice(&(v.len() as u32).to_le_bytes());
            old.extend_from_slice(v.as_bytes());
        }
        fs::write(stage.join(format!("txn-{:020}-p0.stage", 3)), &old).unwrap();
        StagedTopicWriter::open(t.clone(), &job, "sink", "run", 0, 1, Some(3)).unwrap();
        assert_eq!(values(&t), vec!["a", "bc"]);
    }

    #[test]
    fn a_record_over_the_topic_limit_is_refused_when_staged_and_letters_are_cut_to_fit() {
        let dir = tempfile::tempdir().unwrap();
        let t = topic(dir.path(), 300);
        let job = dir.path().join("job");
        let mut w = StagedTopicWriter::open(t.clone(), &job, "sink", "run", 0, 1, None).unwrap();
        let err = w.write(0, None, &[b'x'; 301]).unwrap_err();
        assert_eq!(err.class(), keel_types::ErrorClass::User);
        assert!(err.to_string().contains("a row of 301 bytes is larger than topic 'out' accepts (300 bytes"), "{err}");
        let record = "é\"".repeat(400);
        w.write_letter(serde_json::json!({ "table": "t", "error": "late", "record": record }).to_string().into_bytes())
            .unwrap();
        w.write_letter(
            serde_json::json!({ "table": "t", "error": "late", "record": "small" }).to_string().into_bytes(),
        )
        .unwrap();
        w.pre_commit(1).unwrap();
        w.commit_upto(1).unwrap();
        let got = values(&t);
        assert_eq!(got.len(), 2);
        let cut: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        assert!(got[0].len() <= 300, "{}", got[0].len());
        assert_eq!(cut["record_truncated"], serde_json::json!(record.len()));
        assert!(record.starts_with(cut["record"].as_str().unwrap()) && !cut["record"].as_str().unwrap().is_empty());
        let whole: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
        assert_eq!(whole["record"], "small");
        assert!(whole.get("record_truncated").is_none());
    }
}
