//! Reading committed records from one partition, from any offset, following new appends.
//!
//! Invariants: a reader delivers each committed record once, in offset order, and never a record
//! from an incomplete or CRC-damaged frame or from a transaction whose commit batch is not yet on
//! disk. A damaged frame that nothing valid follows in the last segment may be an append in
//! progress (or a torn tail the next writer truncates), so the reader waits at it; a damaged
//! frame with valid data after it, damage in a segment that has a successor, or a hole between
//! segments is reported as `LogError::Damaged`, and nothing past it is served. Gap batches
//! (offsets `keel topic repair` moved aside) are skipped: their offsets are never delivered.

use crate::format::{
    BODY_HEADER, BatchHeader, FRAME_HEADER, Frame, find_resume, for_each_record, parse_header, read_frame,
};
use crate::segment::{continuity_problem, list_segments, segment_path, walk_headers};
use crate::{LogError, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// A record as read: its offset, key and value borrowed from the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

/// Committed batches read in one call, in offset order.
pub struct Chunk {
    data: Vec<u8>,
    batches: Vec<(usize, usize, BatchHeader)>,
    skip_below: u64,
    topic: String,
    partition: u32,
    path: PathBuf,
    file_pos: u64,
}

impl Chunk {
    /// Calls `f` for each record at or after the offset the reader was asked for.
    pub fn for_each<'a>(&'a self, mut f: impl FnMut(RecordRef<'a>)) -> Result<()> {
        for &(start, len, header) in &self.batches {
            if header.is_gap() {
                continue;
            }
            let mut offset = header.base_offset;
            let skip = self.skip_below;
            for_each_record(&self.data[start..start + len], header.count, |key, value| {
                if offset >= skip {
                    f(RecordRef { offset, key, value });
                }
                offset += 1;
            })
            .map_err(|reason| LogError::Damaged {
                topic: self.topic.clone(),
                partition: self.partition,
                path: self.path.clone(),
                position: self.file_pos + start as u64,
                reason: reason.to_string(),
                offset: header.base_offset,
                resume: None,
            })?;
        }
        Ok(())
    }

    /// Number of records delivered by `for_each`.
    pub fn len(&self) -> usize {
        self.batches
            .iter()
            .filter(|(_, _, h)| !h.is_gap())
            .map(|(_, _, h)| h.next_offset().saturating_sub(h.base_offset.max(self.skip_below)) as usize)
            .sum()
    }

    /// Ranges of offsets `[from, to)` this chunk passes over because `keel topic repair` found
    /// them damaged: they were lost, and no record will ever be delivered for them.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        self.batches
            .iter()
            .filter(|(_, _, h)| h.is_gap() && h.next_offset() > self.skip_below)
            .map(|(_, _, h)| (h.base_offset.max(self.skip_below), h.next_offset()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total bytes of the batches in this chunk.
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.1).sum()
    }
}

struct OpenSegment {
    base: u64,
    path: PathBuf,
    file: File,
    pos: u64,
}

/// Reads one partition's committed records.
pub struct PartitionReader {
    topic: String,
    partition: u32,
    dir: PathBuf,
    next_offset: u64,
    segment: Option<OpenSegment>,
    max_units: usize,
    /// A problem at the end of the last segment found to have nothing valid after it, as
    /// `(segment base, position, file length)`: not scanned again until the file changes.
    torn_tail: Option<(u64, u64, u64)>,
}

impl PartitionReader {
    pub(crate) fn open(topic: String, partition: u32, dir: PathBuf, from: u64) -> Result<Self> {
        Ok(PartitionReader {
            topic,
            partition,
            dir,
            next_offset: from,
            segment: None,
            max_units: usize::MAX,
            torn_tail: None,
        })
    }

    /// The offset of the next record this reader will deliver.
    pub fn position(&self) -> u64 {
        self.next_offset
    }

    /// Reads up to about `max_bytes` of committed records; `None` when none are available now.
    pub fn read(&mut self, max_bytes: usize) -> Result<Option<Chunk>> {
        self.read_batches(max_bytes, usize::MAX)
    }

    /// Like `read`, but returns at most `max_batches` of the batches the producers wrote (a
    /// transaction counts as one).
    pub fn read_batches(&mut self, max_bytes: usize, max_batches: usize) -> Result<Option<Chunk>> {
        self.max_units = max_batches.max(1);
        'segments: loop {
            if self.segment.is_none() {
                self.segment = self.locate()?;
                if self.segment.is_none() {
                    return Ok(None);
                }
            }
            let mut want = max_bytes.max(64 << 10);
            if self.max_units == 1 {
                // One producer batch: read exactly its frame when its header says how long it is.
                let seg = self.segment.as_ref().expect("invariant: segment located above");
                let mut head = [0u8; FRAME_HEADER + BODY_HEADER];
                if seg.file.read_exact_at(&mut head, seg.pos).is_ok()
                    && let Some((len, _)) = parse_header(&head)
                {
                    want = len;
                }
            }
            loop {
                let seg = self.segment.as_ref().expect("invariant: segment located above");
                let file_len = seg.file.metadata().map_err(LogError::io("cannot stat segment", &seg.path))?.len();
                if file_len < seg.pos {
                    // The file was cut under this reader (a failed append cut back, a torn tail
                    // cut): find the position again.
                    self.segment = None;
                    continue 'segments;
                }
                let available = (file_len - seg.pos) as usize;
                if available == 0 {
                    break;
                }
                let n = want.min(available);
                let mut data = vec![0u8; n];
                seg.file.read_exact_at(&mut data, seg.pos).map_err(LogError::io("cannot read segment", &seg.path))?;
                match self.parse(data, n == available, file_len)? {
                    Parsed::Chunk(chunk) => return Ok(Some(chunk)),
                    Parsed::NeedMore(bytes) if n < available => want = bytes.max(want.saturating_mul(2)),
                    Parsed::NeedMore(_) | Parsed::Nothing => {
                        if self.replaced()? {
                            self.segment = None;
                            continue 'segments;
                        }
                        return Ok(None);
                    }
                }
            }
            // At the end of this segment's data: a repaired segment is a new file; else move on
            // if the next segment exists.
            if self.replaced()? {
                self.segment = None;
                continue;
            }
            let next_path = segment_path(&self.dir, self.next_offset);
            let seg = self.segment.as_ref().expect("invariant: segment located above");
            if seg.base != self.next_offset && next_path.exists() {
                self.segment = None;
                continue;
            }
            // A later segment that does not start where this one ends: offsets are missing, unless
            // the writer appended to this one and rolled since it was read (a successor is made
            // only after its predecessor's last write, so looking at the length again settles it).
            let base = seg.base;
            if let Some((later, _)) = list_segments(&self.dir)?.into_iter().find(|(b, _)| *b > base) {
                let seg = self.segment.as_ref().expect("invariant: segment located above");
                if seg.file.metadata().map_err(LogError::io("cannot stat segment", &seg.path))?.len() > seg.pos {
                    continue;
                }
                return Err(LogError::Damaged {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    path: seg.path.clone(),
                    position: seg.pos,
                    reason: format!(
                        "the segment ends at offset {} but the next segment starts at offset {later}",
                        self.next_offset
                    ),
                    offset: self.next_offset,
                    resume: Some((0, later)),
                });
            }
            return Ok(None);
        }
    }

    /// Finds the segment holding `next_offset` and the position of the batch that holds it.
    fn locate(&mut self) -> Result<Option<OpenSegment>> {
        let segments = list_segments(&self.dir)?;
        let Some((base, path)) = segments.iter().rev().find(|(b, _)| *b <= self.next_offset).cloned() else {
            return match segments.first() {
                Some((earliest, _)) => Err(LogError::OffsetOutOfRange {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    requested: self.next_offset,
                    earliest: *earliest,
                }),
                None => Ok(None),
            };
        };
        let file = File::open(&path).map_err(LogError::io("cannot open segment", &path))?;
        let len = file.metadata().map_err(LogError::io("cannot stat segment", &path))?.len();
        let target = self.next_offset;
        let pos = walk_headers(&file, &path, len, |_, header, _| header.next_offset() <= target)?;
        Ok(Some(OpenSegment { base, path, file, pos }))
    }

    fn parse(&mut self, data: Vec<u8>, to_eof: bool, file_len: u64) -> Result<Parsed> {
        let seg_pos = self.segment.as_ref().expect("invariant: segment located before parse").pos;
        let mut at = 0usize;
        let mut batches = vec![];
        let mut committed_batches = 0;
        let mut committed_end = 0usize;
        let mut expected = None::<u64>;
        let mut open_run = None;
        let mut committed_next = self.next_offset;
        let mut units = 0;
        while at < data.len() && units < self.max_units {
            match read_frame(&data[at..], true) {
                Frame::Batch { header, len } => {
                    let exp = expected.unwrap_or(header.base_offset);
                    if expected.is_none()
                        && !(header.base_offset <= self.next_offset
                            && self.next_offset <= header.next_offset().max(header.base_offset))
                    {
                        let reason =
                            format!("batch at offset {} where {} was expected", header.base_offset, self.next_offset);
                        return Err(self.damaged(at, reason, Some((seg_pos + at as u64, header.base_offset))));
                    }
                    if let Some(problem) = continuity_problem(&header, exp, open_run) {
                        if committed_batches > 0 {
                            break; // deliver what came before; the next read starts at the problem
                        }
                        return Err(self.damaged(at, problem, Some((seg_pos + at as u64, header.base_offset))));
                    }
                    batches.push((at, len, header));
                    at += len;
                    expected = Some(header.next_offset());
                    if header.is_txn() && !header.is_txn_last() {
                        open_run = Some((header.producer, header.sequence));
                    } else {
                        open_run = None;
                        units += 1;
                        committed_batches = batches.len();
                        committed_end = at;
                        committed_next = header.next_offset();
                    }
                }
                Frame::Incomplete => {
                    if committed_batches > 0 {
                        break;
                    }
                    if !to_eof {
                        let needed = if data.len() - at >= FRAME_HEADER {
                            at + FRAME_HEADER
                                + u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize
                        } else {
                            at + FRAME_HEADER
                        };
                        return Ok(Parsed::NeedMore(needed));
                    }
                    let reason = format!("an incomplete batch of {} bytes", data.len() - at);
                    self.classify_problem(&data, at, file_len, reason)?;
                    return Ok(Parsed::Nothing);
                }
                Frame::Bad(reason) => {
                    if committed_batches > 0 {
                        break;
                    }
                    if !to_eof {
                        // Look at the rest of the file: is there valid data after the damage?
                        return Ok(Parsed::NeedMore(usize::MAX));
                    }
                    self.classify_problem(&data, at, file_len, reason)?;
                    return Ok(Parsed::Nothing);
                }
            }
        }
        if committed_batches == 0 {
            return Ok(if open_run.is_some() && !to_eof { Parsed::NeedMore(data.len() * 2) } else { Parsed::Nothing });
        }
        batches.truncate(committed_batches);
        let seg = self.segment.as_mut().expect("invariant: segment located before parse");
        let chunk = Chunk {
            data,
            batches,
            skip_below: self.next_offset,
            topic: self.topic.clone(),
            partition: self.partition,
            path: seg.path.clone(),
            file_pos: seg.pos,
        };
        seg.pos += committed_end as u64;
        self.next_offset = committed_next;
        Ok(Parsed::Chunk(chunk))
    }

    /// A problem at `data[at..]`, which runs to the end of the file: `Ok` when it may be an
    /// append in progress or a torn tail (nothing valid follows in this, the last, segment), so
    /// the reader waits at it; `Err(Damaged)` when valid data follows or a later segment exists
    /// (and the file did not change since it was read).
    fn classify_problem(&mut self, data: &[u8], at: usize, file_len: u64, reason: String) -> Result<()> {
        let seg = self.segment.as_ref().expect("invariant: segment located before parse");
        let (base, position) = (seg.base, seg.pos + at as u64);
        if self.torn_tail == Some((base, position, file_len)) {
            return Ok(());
        }
        let resume = find_resume(data, at, at + 1, None).map(|(pos, h)| (seg.pos + pos as u64, h.base_offset));
        let later = list_segments(&self.dir)?.into_iter().find(|(b, _)| *b > base).map(|(b, _)| (0, b));
        let seg = self.segment.as_ref().expect("invariant: segment located before parse");
        let now = seg.file.metadata().map_err(LogError::io("cannot stat segment", &seg.path))?.len();
        match resume.or(later) {
            Some(_) if now != file_len => Ok(()), // written since: look again at the next read
            Some(resume) => Err(self.damaged(at, reason, Some(resume))),
            None => {
                if self.torn_tail.is_none_or(|(b, p, _)| (b, p) != (base, position)) {
                    tracing::debug!(
                        topic = %self.topic,
                        partition = self.partition,
                        "waiting at an incomplete write at byte {position} of {} ({reason}): an append in progress, \
                         or one cut short that the next writer removes",
                        seg.path.display()
                    );
                }
                self.torn_tail = Some((base, position, file_len));
                Ok(())
            }
        }
    }

    /// Whether the open segment's path now names another file (a repair replaced it).
    fn replaced(&self) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let Some(seg) = &self.segment else { return Ok(false) };
        let open = seg.file.metadata().map_err(LogError::io("cannot stat segment", &seg.path))?;
        Ok(match std::fs::metadata(&seg.path) {
            Ok(on_disk) => on_disk.ino() != open.ino() || on_disk.dev() != open.dev(),
            Err(_) => false, // deleted by retention: the open file is read to its end
        })
    }

    fn damaged(&self, at: usize, reason: String, resume: Option<(u64, u64)>) -> LogError {
        let seg = self.segment.as_ref().expect("invariant: segment located");
        LogError::Damaged {
            topic: self.topic.clone(),
            partition: self.partition,
            path: seg.path.clone(),
            position: seg.pos + at as u64,
            reason,
            offset: self.next_offset,
            resume,
        }
    }
}

enum Parsed {
    Chunk(Chunk),
    NeedMore(usize),
    Nothing,
}
