//! Repairing a damaged partition (`keel topic repair`): every segment is read and verified
//! whole; each damaged range is copied aside into the partition's `damaged/` directory, removed
//! from its segment, and replaced by a gap batch covering exactly the offsets it held, so the
//! records after it are served again and the lost offsets are known.
//!
//! Invariants: nothing is removed before its bytes are fsynced in `damaged/`; a segment is
//! replaced atomically (written whole to a temporary file, fsynced, renamed over the original,
//! directory fsynced); offsets stay dense (a gap batch takes the lost offsets); a transaction
//! whose commit batch was lost is removed whole (its records were never readable), and so is
//! the transaction a gap would interrupt; the partition's append lock is held throughout, so no
//! writer appends while a segment is rewritten. A repair of an undamaged partition changes
//! nothing. A damaged range at the very end of the last segment is a torn tail: how many
//! records it held cannot be known (none were readable), so it is cut like a writer cuts one,
//! its bytes kept.

use crate::format::{
    BODY_HEADER, BatchHeader, FRAME_HEADER, Frame, encode_gap, find_resume, for_each_record, parse_header, read_frame,
};
use crate::segment::{
    aside_name, claimed_end, continuity_problem, list_segments, save_aside, sync_dir, write_file_synced,
};
use crate::topic::Topic;
use crate::writer::Durability;
use crate::{LogError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One damaged range found in a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedRange {
    pub segment: PathBuf,
    /// Bytes `[from_byte, to_byte)` of the segment as it was.
    pub from_byte: u64,
    pub to_byte: u64,
    /// Offsets `[from, to)` no record will ever be read for; `None` for a torn tail at the end
    /// of the partition (its records were never readable and their count is unknown).
    pub lost_offsets: Option<(u64, u64)>,
    pub reason: String,
    /// Where the bytes were copied (`None` in a dry run or for a hole between segments).
    pub kept_in: Option<PathBuf>,
}

/// What repairing (or checking) one partition found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    pub partition: u32,
    pub segments: usize,
    pub bytes_checked: u64,
    pub damaged: Vec<DamagedRange>,
    /// `producers.json` was unreadable and was rebuilt from the commits in the segments.
    pub rebuilt_producers: bool,
}

impl RepairReport {
    /// Total offsets lost (torn tails count none).
    pub fn lost(&self) -> u64 {
        self.damaged.iter().filter_map(|d| d.lost_offsets).map(|(a, b)| b - a).sum()
    }
}

/// A segment walked from its start: the bytes to keep (gap batches in place of damage), the
/// damage found, and what the next segment must start with.
struct Walked {
    out: Vec<u8>,
    damaged: Vec<DamagedRange>,
    end_offset: u64,
    commits: Vec<(u64, u64)>,
}

/// Whether the segment's writer marked each transaction's first batch (bit 3, written since
/// issue 12): then a transaction batch without the mark that follows damage is known to have
/// lost its start. Segments of Keel 0.1 have no marks, and such a batch is kept.
fn marks_first_batches(data: &[u8]) -> bool {
    let mut at = 0;
    while let Some((pos, header)) = find_resume(data, at, at, None) {
        if header.is_txn_first() {
            return true;
        }
        at = pos + parse_header(&data[pos..]).map_or(1, |(len, _)| len);
    }
    false
}

/// From a valid transaction batch at `at`, the batches of the same transaction that follow it
/// in order: the position after the last of them, the offset after it, and whether it was the
/// commit.
fn run_from(data: &[u8], mut at: usize, first: &BatchHeader) -> (usize, u64, bool) {
    let mut next = first.base_offset;
    while let Frame::Batch { header, len } = read_frame(&data[at..], true) {
        if !header.is_txn()
            || (header.producer, header.sequence) != (first.producer, first.sequence)
            || header.base_offset != next
        {
            break;
        }
        at += len;
        next = header.next_offset();
        if header.is_txn_last() {
            return (at, next, true);
        }
    }
    (at, next, false)
}

/// Walks one segment's bytes. `next_base`: the following segment's base (none for the last).
fn walk(path: &Path, data: &[u8], base: u64, next_base: Option<u64>) -> Walked {
    let marks_first = marks_first_batches(data);
    let now = keel_types::time::now_ms();
    let mut w = Walked { out: Vec::with_capacity(data.len()), damaged: vec![], end_offset: base, commits: vec![] };
    let mut pos = 0usize;
    let mut expected = base;
    // The open transaction run: (its start in `out`, in the file, its first offset, its id).
    let mut run: Option<(usize, usize, u64, (u64, u64))> = None;
    let damage = |w: &mut Walked, from: usize, to: usize, lost: Option<(u64, u64)>, reason: String| {
        if let Some((a, b)) = lost
            && b > a
        {
            encode_gap(&mut w.out, a, b, now);
        }
        w.damaged.push(DamagedRange {
            segment: path.to_path_buf(),
            from_byte: from as u64,
            to_byte: to as u64,
            lost_offsets: lost,
            reason,
            kept_in: None,
        });
    };
    while pos < data.len() {
        // The frame here, if it is whole, valid, continues the data and its records parse.
        let (problem, frame_itself_fine) = match read_frame(&data[pos..], true) {
            Frame::Batch { header, len } => {
                let open = run.map(|r| r.3);
                match continuity_problem(&header, expected, open) {
                    None => match records_fit(&data[pos..pos + len], &header) {
                        Ok(()) => {
                            if header.is_txn() && !header.is_txn_last() && run.is_none() {
                                run = Some((w.out.len(), pos, header.base_offset, (header.producer, header.sequence)));
                            } else if header.is_txn_last() {
                                run = None;
                                w.commits.push((header.producer, header.sequence));
                            }
                            w.out.extend_from_slice(&data[pos..pos + len]);
                            pos += len;
                            expected = header.next_offset();
                            continue;
                        }
                        Err(e) => (e.to_string(), false),
                    },
                    // A valid frame that only does not follow: it can be where data resumes.
                    Some(p) => (p, header.base_offset >= expected),
                }
            }
            Frame::Incomplete => (format!("an incomplete batch of {} bytes", data.len() - pos), false),
            Frame::Bad(reason) => (reason, false),
        };
        // Damage starts at the open run's first batch: a transaction cut by it is lost whole.
        let (from, lost_from) = match run.take() {
            Some((out_at, file_at, first, _)) => {
                w.out.truncate(out_at);
                (file_at, first)
            }
            None => (pos, expected),
        };
        let search = if frame_itself_fine { pos } else { pos + 1 };
        match find_resume(data, from, search, Some(lost_from)) {
            Some((at, header)) if marks_first && header.is_txn() && !header.is_txn_first() => {
                // Data resumes inside a transaction whose first batches were lost: the rest of
                // it is removed too (its commit never counts), so no reader sees half of it and
                // a writer retrying it is not told it was committed.
                let (end, next, _) = run_from(data, at, &header);
                damage(&mut w, from, end, Some((lost_from, next)), format!("{problem}, inside a transaction"));
                pos = end;
                expected = next;
            }
            Some((at, header)) => {
                damage(&mut w, from, at, Some((lost_from, header.base_offset)), problem);
                pos = at;
                expected = header.base_offset;
            }
            None => {
                // To the next segment; or, in the last, to what the torn tail's frames claimed
                // (their offsets may have been read: they are never used again).
                let lost = match next_base {
                    Some(next) => Some((lost_from, next.max(lost_from))),
                    None => Some((lost_from, claimed_end(data, from, lost_from))).filter(|(a, b)| b > a),
                };
                damage(&mut w, from, data.len(), lost, problem);
                pos = data.len();
                expected = lost.map_or(lost_from, |l| l.1);
            }
        }
    }
    if let Some((out_at, file_at, first, _)) = run {
        // A transaction without its commit at the end of the segment.
        w.out.truncate(out_at);
        let lost = next_base.map(|next| (first, next.max(first)));
        damage(&mut w, file_at, data.len(), lost, "a transaction that was never committed".to_string());
        expected = lost.map_or(first, |l| l.1);
    }
    if let Some(next) = next_base
        && expected < next
    {
        // The segment ends before the next one starts: those offsets are missing.
        damage(
            &mut w,
            data.len(),
            data.len(),
            Some((expected, next)),
            format!("offsets missing before segment {next}"),
        );
        expected = next;
    }
    w.end_offset = expected;
    w
}

/// Whether a verified frame's body holds exactly its records (a gap batch: none, and at least
/// one offset).
fn records_fit(frame: &[u8], header: &BatchHeader) -> std::result::Result<(), &'static str> {
    if header.is_gap() {
        return match (frame.len() == FRAME_HEADER + BODY_HEADER, header.count > 0) {
            (true, true) => Ok(()),
            _ => Err("a gap batch that holds records or no offsets"),
        };
    }
    for_each_record(frame, header.count, |_, _| {})
}

impl Topic {
    /// Checks one partition whole and, unless `dry_run`, repairs it: damaged ranges are copied
    /// to `damaged/` and replaced by gaps, a torn tail is cut, and an unreadable
    /// `producers.json` is rebuilt. Holds the partition's append lock throughout.
    pub fn repair_partition(&self, partition: u32, dry_run: bool) -> Result<RepairReport> {
        let dir = self.partition_path(partition)?;
        // A dry run changes nothing, so it keeps no writer out.
        let _appends = if dry_run { None } else { Some(self.writer(partition, Durability::Fsync)?.hold_lock()?) };
        let segments = list_segments(&dir)?;
        let mut report = RepairReport { partition, segments: segments.len(), ..RepairReport::default() };
        let mut producers: BTreeMap<u64, u64> = BTreeMap::new();
        for (i, (base, path)) in segments.iter().enumerate() {
            let data = fs::read(path).map_err(LogError::io("cannot read segment", path))?;
            report.bytes_checked += data.len() as u64;
            let next_base = segments.get(i + 1).map(|s| s.0);
            if let Some(next) = next_base
                && next < *base
            {
                return Err(LogError::InvalidConfig(format!("segments {} and {next} overlap", path.display())));
            }
            let walked = walk(path, &data, *base, next_base);
            if next_base.is_some() {
                for (p, s) in &walked.commits {
                    let e = producers.entry(*p).or_insert(*s);
                    *e = (*e).max(*s);
                }
            }
            if walked.damaged.is_empty() {
                continue;
            }
            let mut damaged = walked.damaged;
            if !dry_run {
                for d in damaged.iter_mut().filter(|d| d.to_byte > d.from_byte) {
                    let bytes = &data[d.from_byte as usize..d.to_byte as usize];
                    d.kept_in = Some(save_aside(&dir, &aside_name(*base, d.from_byte), bytes)?);
                }
                // Its damaged bytes are safe in damaged/: the segment is replaced now, so memory
                // holds one segment at a time.
                replace_file(&dir, path, &walked.out)?;
            }
            report.damaged.extend(damaged);
        }
        let table = dir.join("producers.json");
        let readable = match fs::read(&table) {
            Ok(b) => keel_types::checked_json::from_slice::<serde_json::Value>(&b).is_ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(LogError::io("cannot read", &table)(e)),
        };
        if !readable {
            report.rebuilt_producers = true;
            if !dry_run {
                let as_of = segments.last().map_or(0, |s| s.0);
                let json = serde_json::json!({ "as_of": as_of, "producers": producers });
                let bytes = serde_json::to_vec(&json)
                    .map_err(|e| LogError::BadMetadata { path: table.clone(), reason: e.to_string() })?;
                save_aside(&dir, "producers.json", &fs::read(&table).unwrap_or_default())?;
                write_file_synced(&table, &bytes)?;
            }
        }
        Ok(report)
    }
}

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, directory fsync).
fn replace_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("repair");
    let mut f = File::create(&tmp).map_err(LogError::io("cannot create", &tmp))?;
    f.write_all(bytes).map_err(LogError::io("cannot write", &tmp))?;
    f.sync_all().map_err(LogError::io("cannot fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(LogError::io("cannot rename into place", path))?;
    sync_dir(dir)
}
