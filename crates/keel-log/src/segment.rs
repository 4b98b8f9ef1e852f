//! Segment files: listing them, scanning one for its valid and committed extent, and the small
//! durable-write helpers (write + fsync, directory fsync) the log and topics use.
//!
//! Invariant: `scan_segment` never trusts a frame it has not fully read and (when asked) verified;
//! it reports where valid data ends, where committed data ends (before any open transaction run),
//! why it stopped, and whether valid data follows the problem. Only a problem that nothing valid
//! follows is a torn tail (an incomplete last write), which a writer may truncate; a problem with
//! valid data after it is damage to acknowledged data, which is never truncated automatically.

use crate::format::{
    BODY_HEADER, BatchHeader, FRAME_HEADER, Frame, find_resume, header_ignoring_length, parse_header,
    parse_segment_name, read_frame, segment_name,
};
use crate::{LogError, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Segments of a partition directory as `(base_offset, path)`, in increasing offset order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = vec![];
    let entries = fs::read_dir(dir).map_err(LogError::io("cannot list partition directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(LogError::io("cannot list partition directory", dir))?;
        if let Some(base) = parse_segment_name(&entry.file_name().to_string_lossy()) {
            out.push((base, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_name(base))
}

/// The result of scanning one segment from its start.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub file_len: u64,
    /// End of the last complete, valid batch.
    pub valid_len: u64,
    /// End of the last batch that is not inside an unfinished transaction run.
    pub committed_len: u64,
    /// Offset after the last committed record.
    pub committed_next: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub tail_problem: Option<String>,
    /// Valid data after the problem, as `(position, base offset)` of its first batch: the
    /// problem is damage in the middle of the data, not a torn tail.
    pub resume: Option<(u64, u64)>,
    /// The problem is a complete frame that failed its checks (a flipped byte, say), not a
    /// write that ended early; truncating it may lose acknowledged data, so its bytes are kept.
    pub complete_bad_frame: bool,
    /// Transaction commits seen: `(producer, sequence)`.
    pub commits: Vec<(u64, u64)>,
}

impl Scan {
    /// True when the data after the last committed batch may be cut off: nothing valid follows
    /// the problem (an incomplete write, or a transaction whose commit never came).
    pub fn is_torn_tail(&self) -> bool {
        self.committed_len < self.file_len && self.resume.is_none()
    }
}

/// Scans a whole segment whose first offset is `base`.
pub(crate) fn scan_segment(path: &Path, base: u64, verify: bool) -> Result<Scan> {
    let data = fs::read(path).map_err(LogError::io("cannot read segment", path))?;
    Ok(scan_bytes(&data, base, verify))
}

pub(crate) fn scan_bytes(data: &[u8], base: u64, verify: bool) -> Scan {
    let mut scan = Scan { file_len: data.len() as u64, committed_next: base, ..Scan::default() };
    let mut at = 0usize;
    let mut next = base;
    let mut open_run: Option<(u64, u64)> = None; // producer, sequence of the unfinished run
    let mut problem_at = None;
    while at < data.len() {
        match read_frame(&data[at..], verify) {
            Frame::Batch { header, len } => {
                if let Some(problem) = continuity_problem(&header, next, open_run) {
                    scan.tail_problem = Some(problem);
                    scan.complete_bad_frame = true;
                    problem_at = Some(at);
                    break;
                }
                at += len;
                next = header.next_offset();
                scan.valid_len = at as u64;
                if header.is_txn() && !header.is_txn_last() {
                    open_run = Some((header.producer, header.sequence));
                } else {
                    if header.is_txn() {
                        scan.commits.push((header.producer, header.sequence));
                    }
                    open_run = None;
                    scan.committed_len = at as u64;
                    scan.committed_next = next;
                }
            }
            Frame::Incomplete => {
                scan.tail_problem = Some(format!("an incomplete batch of {} bytes", data.len() - at));
                problem_at = Some(at);
                break;
            }
            Frame::Bad(reason) => {
                scan.tail_problem = Some(reason);
                scan.complete_bad_frame = frame_fits(&data[at..]);
                problem_at = Some(at);
                break;
            }
        }
    }
    if let Some(at) = problem_at {
        // Any valid frame after the problem makes it damage: a torn tail has nothing after it.
        let search = if scan.complete_bad_frame && read_frame(&data[at..], verify).is_batch() { at } else { at + 1 };
        scan.resume = find_resume(data, at, search, None).map(|(pos, h)| (pos as u64, h.base_offset));
    } else if open_run.is_some() {
        scan.tail_problem = Some("a transaction that was never committed".to_string());
    }
    debug_assert!(scan.committed_len <= scan.valid_len && scan.valid_len <= scan.file_len);
    scan
}

/// The offsets a torn tail claimed: walking the frames from byte `from` (where committed data
/// ends, offset `next`), whole valid frames (an unfinished transaction's) count their records,
/// and the first damaged or cut-short frame counts its header's, if its header is readable and
/// starts at the offset expected. Cutting the tail leaves these offsets to a gap, so that no
/// offset a reader may have seen is ever used again for another record.
pub(crate) fn claimed_end(data: &[u8], from: usize, mut next: u64) -> u64 {
    let mut at = from;
    while at < data.len() {
        match read_frame(&data[at..], true) {
            Frame::Batch { header, len } if header.base_offset == next => {
                next = header.next_offset();
                at += len;
            }
            _ => {
                if let Some(h) = header_ignoring_length(&data[at..])
                    && h.base_offset == next
                {
                    // Bounded by what one frame can hold, whatever a damaged count says.
                    let most = (crate::format::MAX_BODY / crate::format::RECORD_OVERHEAD) as u64;
                    next = next.saturating_add(u64::from(h.count).min(most));
                }
                break;
            }
        }
    }
    next
}

/// Whether the frame at the start of `buf` claims a length that lies within `buf`.
fn frame_fits(buf: &[u8]) -> bool {
    buf.len() >= FRAME_HEADER
        && FRAME_HEADER as u64 + u64::from(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])) <= buf.len() as u64
}

/// Why a batch cannot follow the previous one, if it cannot.
pub(crate) fn continuity_problem(header: &BatchHeader, expected: u64, open_run: Option<(u64, u64)>) -> Option<String> {
    if header.base_offset != expected {
        return Some(format!("batch starts at offset {} where {expected} was expected", header.base_offset));
    }
    if let Some((producer, sequence)) = open_run
        && (!header.is_txn() || header.producer != producer || header.sequence != sequence)
    {
        return Some("a transaction's batches are interrupted by another batch".to_string());
    }
    None
}

/// The offset after the last committed record of a segment, from its frame headers, with the
/// last committed frame's CRC checked: a damaged last frame (which readers wait at, since it may
/// be a write in progress) is not counted, so a bounded job never waits for offsets that will
/// never be served. Only when that frame fails is the segment verified whole.
pub(crate) fn verified_end(path: &Path, base: u64) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).map_err(LogError::io("cannot open segment", path))?;
    let file_len = file.metadata().map_err(LogError::io("cannot stat segment", path))?.len();
    let mut last: Option<(u64, u64)> = None;
    let mut open_run = None;
    let mut expected = base;
    let mut committed = base;
    walk_headers(&file, path, file_len, |pos, header, len| {
        if continuity_problem(header, expected, open_run).is_some() {
            return false;
        }
        expected = header.next_offset();
        if header.is_txn() && !header.is_txn_last() {
            open_run = Some((header.producer, header.sequence));
        } else {
            open_run = None;
            committed = header.next_offset();
            last = Some((pos, len));
        }
        true
    })?;
    let Some((pos, len)) = last else { return Ok(committed) };
    let mut frame = vec![0u8; len as usize];
    file.read_exact_at(&mut frame, pos).map_err(LogError::io("cannot read segment", path))?;
    if read_frame(&frame, true).is_batch() {
        return Ok(committed);
    }
    Ok(scan_segment(path, base, true)?.committed_next)
}

/// Calls `f(position, header, frame length)` for each complete-looking frame from the start of
/// the file, until `f` returns false or a frame is incomplete or implausible; returns the
/// position where it stopped.
pub(crate) fn walk_headers(
    file: &File,
    path: &Path,
    file_len: u64,
    mut f: impl FnMut(u64, &BatchHeader, u64) -> bool,
) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut pos = 0u64;
    let mut buf = [0u8; FRAME_HEADER + BODY_HEADER];
    while pos + buf.len() as u64 <= file_len {
        file.read_exact_at(&mut buf, pos).map_err(LogError::io("cannot read segment", path))?;
        let Some((len, header)) = parse_header(&buf) else { break };
        if pos + len as u64 > file_len || !f(pos, &header, len as u64) {
            break;
        }
        pos += len as u64;
    }
    Ok(pos)
}

/// Writes `bytes` to `path` through a temporary file, fsyncs it, and renames it into place.
pub(crate) fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(LogError::io("cannot create", &tmp))?;
    f.write_all(bytes).map_err(LogError::io("cannot write", &tmp))?;
    f.sync_all().map_err(LogError::io("cannot fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(LogError::io("cannot rename into place", path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Fsyncs a directory so that entries created or renamed in it survive power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io("cannot fsync directory", dir))
}

/// The name `save_aside` gives the bytes of segment `base` from byte `from`.
pub(crate) fn aside_name(base: u64, from: u64) -> String {
    format!("{}-at-{from}", segment_name(base))
}

/// Copies bytes (of a segment, or a metadata file) into `DIR/damaged/NAME.bin` (fsynced) before
/// anything removes or replaces them; returns the copy's path. An earlier copy of the same name
/// is never overwritten.
pub(crate) fn save_aside(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let aside = dir.join("damaged");
    fs::create_dir_all(&aside).map_err(LogError::io("cannot create", &aside))?;
    let mut path = aside.join(format!("{name}.bin"));
    let mut n = 1;
    while path.exists() {
        path = aside.join(format!("{name}.{n}.bin"));
        n += 1;
    }
    let mut f = File::create(&path).map_err(LogError::io("cannot create", &path))?;
    f.write_all(bytes).map_err(LogError::io("cannot write", &path))?;
    f.sync_all().map_err(LogError::io("cannot fsync", &path))?;
    sync_dir(&aside)?;
    sync_dir(dir)?;
    Ok(path)
}
