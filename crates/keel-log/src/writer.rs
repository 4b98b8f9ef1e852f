//! Appending to one partition: plain appends and idempotent transactional commits.
//!
//! Invariants: every append happens under the partition's exclusive file lock; before writing,
//! the writer brings its view of the tail up to date (another process may have appended), and if
//! the tail holds a torn batch or an unfinished transaction that nothing valid follows it
//! truncates it, logging what it removed (a complete frame that failed its checksum is copied to
//! `damaged/` first). Damage with valid data after it is never truncated: the writer refuses to
//! append (`LogError::Damaged`) until `keel topic repair` has run. Every record is checked
//! against the topic's size limit before anything is written, and a write that fails part-way
//! is cut back to where it started, so a failed append leaves nothing of itself. A transactional commit `(producer, sequence)` is written at most once per partition:
//! `producers.json` (as of a segment's start) plus the commits found in the last segment give
//! each producer's last committed sequence.

use crate::format::{
    BatchHeader, FLAG_TXN, FLAG_TXN_FIRST, FLAG_TXN_LAST, Record, TARGET_BATCH_BYTES, encode_batch, encode_gap,
};
use crate::segment::{
    aside_name, claimed_end, list_segments, save_aside, scan_segment, segment_path, sync_dir, write_file_synced,
};
use crate::topic::TopicConfig;
use crate::{LogError, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// A source of record chunks for a streamed transaction: `Ok(None)` ends it.
pub type ChunkSource<'a> = dyn FnMut() -> Result<Option<Vec<Record>>> + 'a;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the data is fsynced: survives power loss.
    Fsync,
    /// After the data is written to the operating system: survives a process kill, not power loss.
    OsBuffer,
}

/// The result of a transactional commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// The records were appended at `base_offset..next_offset`.
    Committed { base_offset: u64, next_offset: u64 },
    /// This producer already committed this sequence (or a later one); nothing was written.
    AlreadyCommitted,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProducerTable {
    /// The table covers every commit before this offset.
    as_of: u64,
    producers: BTreeMap<u64, u64>,
}

/// The writer's view of the partition's tail, valid while the active segment is the same file
/// (a repair replaces a segment by a new file) and its length matches.
struct Tail {
    base: u64,
    file: File,
    len: u64,
    next_offset: u64,
    producers: BTreeMap<u64, u64>,
}

/// A partition's append lock, held until dropped.
pub(crate) struct AppendGuard(File);

impl Drop for AppendGuard {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Appends records to one partition.
pub struct PartitionWriter {
    topic: String,
    partition: u32,
    dir: PathBuf,
    config: TopicConfig,
    durability: Durability,
    lock: File,
    tail: Option<Tail>,
    buf: Vec<u8>,
    /// The offset after the last batch the current write put in the file (some of it may have
    /// been read before the write failed).
    reached: u64,
}

impl PartitionWriter {
    pub(crate) fn open(
        topic: String,
        partition: u32,
        dir: PathBuf,
        config: TopicConfig,
        durability: Durability,
    ) -> Result<Self> {
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(LogError::io("cannot open the partition lock", &lock_path))?;
        Ok(PartitionWriter { topic, partition, dir, config, durability, lock, tail: None, buf: Vec::new(), reached: 0 })
    }

    /// The topic's record size limit (key plus value bytes).
    pub fn max_message_bytes(&self) -> u64 {
        self.config.max_message_bytes
    }

    /// Refuses a record larger than the topic accepts.
    pub fn check_size(&self, record: &Record) -> Result<()> {
        let size = record.size() as u64;
        if size > self.config.max_message_bytes {
            return Err(LogError::RecordTooLarge {
                topic: self.topic.clone(),
                size,
                limit: self.config.max_message_bytes,
            });
        }
        Ok(())
    }

    /// Appends records; returns `(first offset, offset after the last)` once they are durable.
    /// A record over the topic's size limit refuses the whole append (nothing is written).
    pub fn append(&mut self, records: &[Record]) -> Result<(u64, u64)> {
        records.iter().try_for_each(|r| self.check_size(r))?;
        self.locked(|w| {
            let base = w.tail_ref().next_offset;
            w.write_batches(records, 0, 0, false)?;
            Ok((base, w.tail_ref().next_offset))
        })
    }

    /// Appends `records` as the commit of transaction `(producer, sequence)`, unless that
    /// producer already committed `sequence` or a later one here.
    pub fn commit_txn(&mut self, producer: u64, sequence: u64, records: &[Record]) -> Result<TxnOutcome> {
        records.iter().try_for_each(|r| self.check_size(r))?;
        self.locked(|w| {
            if w.tail_ref().producers.get(&producer).is_some_and(|&last| last >= sequence) {
                return Ok(TxnOutcome::AlreadyCommitted);
            }
            let base = w.tail_ref().next_offset;
            w.write_batches(records, producer, sequence, true)?;
            let tail = w.tail_mut();
            tail.producers.insert(producer, sequence);
            Ok(TxnOutcome::Committed { base_offset: base, next_offset: tail.next_offset })
        })
    }

    /// Like `commit_txn`, with the records pulled from `chunks` until it returns `None`, so that a
    /// large transaction never has to be in memory at once.
    pub fn commit_txn_stream(
        &mut self,
        producer: u64,
        sequence: u64,
        chunks: &mut ChunkSource<'_>,
    ) -> Result<TxnOutcome> {
        self.locked(|w| {
            if w.tail_ref().producers.get(&producer).is_some_and(|&last| last >= sequence) {
                return Ok(TxnOutcome::AlreadyCommitted);
            }
            let base = w.tail_ref().next_offset;
            w.write_stream(&mut || Ok(chunks()?.map(Cow::Owned)), producer, sequence, true)?;
            let tail = w.tail_mut();
            tail.producers.insert(producer, sequence);
            Ok(TxnOutcome::Committed { base_offset: base, next_offset: tail.next_offset })
        })
    }

    /// The last sequence `producer` committed to this partition, if any.
    pub fn last_committed(&mut self, producer: u64) -> Result<Option<u64>> {
        self.locked(|w| Ok(w.tail_ref().producers.get(&producer).copied()))
    }

    /// The offset the next append will get.
    pub fn next_offset(&mut self) -> Result<u64> {
        self.locked(|w| Ok(w.tail_ref().next_offset))
    }

    /// Waits for appends in progress and keeps every other writer out until the guard is
    /// dropped (for deleting or repairing the partition).
    pub(crate) fn hold_lock(self) -> Result<AppendGuard> {
        let lock_path = self.dir.join(".lock");
        self.lock.lock().map_err(LogError::io("cannot lock partition", &lock_path))?;
        Ok(AppendGuard(self.lock))
    }

    fn locked<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let lock_path = self.dir.join(".lock");
        self.lock.lock().map_err(LogError::io("cannot lock partition", &lock_path))?;
        let result = self.same_lock_file(&lock_path).and_then(|()| self.refresh()).and_then(|()| f(self));
        if result.is_err() {
            // Re-read the tail next time rather than trust a view an error interrupted.
            self.tail = None;
        }
        let unlocked = self.lock.unlock().map_err(LogError::io("cannot unlock partition", &lock_path));
        let value = result?;
        unlocked?;
        Ok(value)
    }

    /// Refuses to write when the lock file this writer holds is no longer the partition's: the
    /// topic was deleted (and maybe created again) since the writer opened, and another writer
    /// of the new topic would not be kept out.
    fn same_lock_file(&self, lock_path: &std::path::Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let held = self.lock.metadata().map_err(LogError::io("cannot stat", lock_path))?;
        match fs::metadata(lock_path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => Ok(()),
            _ => Err(LogError::Deleted { topic: self.topic.clone(), partition: self.partition }),
        }
    }

    fn tail_ref(&self) -> &Tail {
        self.tail.as_ref().expect("invariant: refresh() sets the tail before use")
    }
    fn tail_mut(&mut self) -> &mut Tail {
        self.tail.as_mut().expect("invariant: refresh() sets the tail before use")
    }

    /// Brings the tail view up to date; recovers (truncates) a damaged tail.
    fn refresh(&mut self) -> Result<()> {
        let segments = list_segments(&self.dir)?;
        if let (Some(tail), Some((last_base, last_path))) = (&self.tail, segments.last())
            && tail.base == *last_base
        {
            use std::os::unix::fs::MetadataExt;
            let on_disk = fs::metadata(last_path).map_err(LogError::io("cannot stat segment", last_path))?;
            let open = tail.file.metadata().map_err(LogError::io("cannot stat segment", last_path))?;
            if on_disk.ino() == open.ino() && on_disk.dev() == open.dev() && on_disk.len() == tail.len {
                return Ok(());
            }
        }
        let table = self.read_producer_table()?;
        let (base, path) = match segments.last() {
            Some((b, p)) => (*b, p.clone()),
            None => {
                let p = segment_path(&self.dir, table.as_of);
                File::create(&p).map_err(LogError::io("cannot create segment", &p))?;
                sync_dir(&self.dir)?;
                (table.as_of, p)
            }
        };
        let scan = scan_segment(&path, base, true)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io("cannot open segment", &path))?;
        if let Some((resume_at, resume_offset)) = scan.resume {
            return Err(LogError::Damaged {
                topic: self.topic.clone(),
                partition: self.partition,
                path,
                position: scan.valid_len,
                reason: scan.tail_problem.clone().unwrap_or_else(|| "unreadable data".to_string()),
                offset: scan.committed_next,
                resume: Some((resume_at, resume_offset)),
            });
        }
        let (mut len, mut next_offset) = (scan.committed_len, scan.committed_next);
        if scan.is_torn_tail() {
            debug_assert!(scan.tail_problem.is_some(), "a tail is cut only for a reason");
            let reason = scan.tail_problem.clone().unwrap_or_else(|| "unknown damage".to_string());
            // The bytes are kept: usually a write cut short, never acknowledged; but a flipped
            // bit in the last acknowledged frame looks the same.
            let data = fs::read(&path).map_err(LogError::io("cannot read segment", &path))?;
            let from = (scan.committed_len as usize).min(data.len());
            let aside = save_aside(&self.dir, &aside_name(base, scan.committed_len), &data[from..])?;
            let claimed = claimed_end(&data, from, scan.committed_next);
            tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                segment = %path.display(),
                "recovering the log: cutting {} bytes after offset {} at its end ({reason}); {}; they are kept in {}{}",
                scan.file_len - scan.committed_len,
                scan.committed_next,
                if scan.complete_bad_frame {
                    "a whole frame fails its checks, so they may have been acknowledged"
                } else {
                    "they were never acknowledged (an append or transaction cut short)"
                },
                aside.display(),
                if claimed > scan.committed_next {
                    format!("; offsets {}..{} are skipped, never used again", scan.committed_next, claimed - 1)
                } else {
                    String::new()
                }
            );
            file.set_len(scan.committed_len).map_err(LogError::io("cannot truncate damaged tail of", &path))?;
            if claimed > scan.committed_next {
                let mut gap = Vec::new();
                encode_gap(&mut gap, scan.committed_next, claimed, keel_types::time::now_ms());
                file.write_all_at(&gap, scan.committed_len).map_err(LogError::io("cannot append to", &path))?;
                len += gap.len() as u64;
                next_offset = claimed;
            }
            file.sync_all().map_err(LogError::io("cannot fsync", &path))?;
        }
        let mut producers = table.producers;
        for (producer, sequence) in scan.commits {
            let e = producers.entry(producer).or_insert(sequence);
            *e = (*e).max(sequence);
        }
        self.tail = Some(Tail { base, file, len, next_offset, producers });
        Ok(())
    }

    fn read_producer_table(&self) -> Result<ProducerTable> {
        let path = self.dir.join("producers.json");
        match fs::read(&path) {
            Ok(bytes) => {
                keel_types::checked_json::from_slice(&bytes).map_err(|reason| LogError::BadMetadata { path, reason })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProducerTable::default()),
            Err(e) => Err(LogError::io("cannot read", path)(e)),
        }
    }

    /// Starts a new segment at the current offset if the active one is full, then applies retention.
    fn maybe_roll(&mut self) -> Result<()> {
        if self.tail_ref().len < self.config.segment_bytes {
            return Ok(());
        }
        let tail = self.tail_ref();
        let base = tail.next_offset;
        let table = ProducerTable { as_of: base, producers: tail.producers.clone() };
        let json = keel_types::checked_json::to_vec(&table)
            .map_err(|reason| LogError::BadMetadata { path: self.dir.join("producers.json"), reason })?;
        write_file_synced(&self.dir.join("producers.json"), &json)?;
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io("cannot create segment", &path))?;
        sync_dir(&self.dir)?;
        let producers = table.producers;
        self.tail = Some(Tail { base, file, len: 0, next_offset: base, producers });
        self.apply_retention()
    }

    /// Deletes closed segments beyond the size or age limit, oldest first. Never the active one.
    fn apply_retention(&mut self) -> Result<()> {
        if self.config.retention_bytes.is_none() && self.config.retention_ms.is_none() {
            return Ok(());
        }
        let segments = list_segments(&self.dir)?;
        let mut sizes = vec![];
        for (_, path) in &segments {
            let meta = fs::metadata(path).map_err(LogError::io("cannot stat", path))?;
            sizes.push((meta.len(), meta.modified().ok()));
        }
        let mut total: u64 = sizes.iter().map(|s| s.0).sum();
        let now = std::time::SystemTime::now();
        for (i, (base, path)) in segments.iter().enumerate().take(segments.len().saturating_sub(1)) {
            let too_big = self.config.retention_bytes.is_some_and(|limit| total > limit);
            let too_old = match (self.config.retention_ms, sizes[i].1) {
                (Some(ms), Some(modified)) => {
                    now.duration_since(modified).is_ok_and(|age| age.as_millis() > u128::from(ms))
                }
                _ => false,
            };
            if !(too_big || too_old) {
                break;
            }
            fs::remove_file(path).map_err(LogError::io("cannot delete expired segment", path))?;
            total -= sizes[i].0;
            tracing::info!(topic = %self.topic, partition = self.partition, "retention deleted segment starting at offset {base}");
        }
        Ok(())
    }

    fn write_batches(&mut self, records: &[Record], producer: u64, sequence: u64, txn: bool) -> Result<()> {
        let mut once = Some(Cow::Borrowed(records));
        self.write_stream(&mut || Ok(once.take()), producer, sequence, txn)
    }

    /// Writes the records of `chunks` (pulled until `None`) as batches; with `txn`, every batch
    /// is marked as part of transaction `(producer, sequence)` and the very last one commits it.
    /// Memory stays at one chunk; a failure part-way leaves a tail the next refresh truncates.
    fn write_stream<'r>(
        &mut self,
        chunks: &mut dyn FnMut() -> Result<Option<Cow<'r, [Record]>>>,
        producer: u64,
        sequence: u64,
        txn: bool,
    ) -> Result<()> {
        self.maybe_roll()?;
        let (start_len, start_next) = (self.tail_ref().len, self.tail_ref().next_offset);
        self.reached = start_next;
        let result = self.write_chunks(chunks, producer, sequence, txn);
        if result.is_err() {
            // Leave nothing of a failed write: a retry must not find half of it (a plain append's
            // whole frames would otherwise stay, never acknowledged). A reader may have read the
            // plain frames that reached the file (not a transaction's: uncommitted, never read),
            // so their offsets go to a gap and are never used again. If even this fails, the next
            // writer finds a torn tail or an unfinished transaction and cuts it.
            let path = segment_path(&self.dir, self.tail_ref().base);
            let file = &self.tail_ref().file;
            let cut = file.set_len(start_len).and_then(|()| {
                if !txn && self.reached > start_next {
                    let mut gap = Vec::new();
                    encode_gap(&mut gap, start_next, self.reached, keel_types::time::now_ms());
                    file.write_all_at(&gap, start_len)?;
                    file.sync_data()?;
                }
                Ok(())
            });
            if let Err(e) = cut {
                tracing::warn!("cannot cut a failed append back in {}: {e}", path.display());
            }
        }
        result
    }

    fn write_chunks<'r>(
        &mut self,
        chunks: &mut dyn FnMut() -> Result<Option<Cow<'r, [Record]>>>,
        producer: u64,
        sequence: u64,
        txn: bool,
    ) -> Result<()> {
        let now = keel_types::time::now_ms();
        let path = segment_path(&self.dir, self.tail_ref().base);
        let durability = self.durability;
        let mut buf = std::mem::take(&mut self.buf);
        let (mut pos, mut next) = (self.tail_ref().len, self.tail_ref().next_offset);
        let mut current = chunks()?;
        let mut first_batch = true;
        loop {
            let following = if current.is_some() { chunks()? } else { None };
            let records = current.take().unwrap_or(Cow::Borrowed(&[]));
            records.iter().try_for_each(|r| self.check_size(r))?;
            let last_chunk = following.is_none();
            buf.clear();
            let mut start = 0;
            loop {
                let mut end = start;
                let mut bytes = 0;
                while end < records.len() && (end == start || bytes + records[end].encoded_len() <= TARGET_BATCH_BYTES)
                {
                    bytes += records[end].encoded_len();
                    end += 1;
                }
                let last = last_chunk && end == records.len();
                let mut flags = 0;
                if txn {
                    flags =
                        FLAG_TXN | if last { FLAG_TXN_LAST } else { 0 } | if first_batch { FLAG_TXN_FIRST } else { 0 };
                }
                let count = (end - start) as u32;
                if count > 0 || (txn && last) {
                    first_batch = false;
                    let header =
                        BatchHeader { flags, count, base_offset: next, append_time_ms: now, producer, sequence };
                    encode_batch(&mut buf, &header, &records[start..end]);
                }
                next += u64::from(count);
                start = end;
                if end == records.len() {
                    break;
                }
            }
            self.reached = next;
            let tail = self.tail_mut();
            if let Some(action) = keel_types::faults::armed("log.append") {
                // A torn write: half the bytes reach the file, then the process dies.
                let _ = tail.file.write_all_at(&buf[..buf.len() / 2], pos);
                keel_types::faults::fire("log.append", action);
            }
            tail.file.write_all_at(&buf, pos).map_err(LogError::io("cannot append to", &path))?;
            pos += buf.len() as u64;
            current = following;
            if last_chunk {
                break;
            }
        }
        let tail = self.tail_mut();
        if durability == Durability::Fsync {
            tail.file.sync_data().map_err(LogError::io("cannot fsync", &path))?;
        }
        tail.len = pos;
        tail.next_offset = next;
        self.buf = buf;
        Ok(())
    }
}
