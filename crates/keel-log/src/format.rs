//! The on-disk batch format. Pinned by fixtures in `tests/log_format.rs`: data written by one
//! version of Keel must stay readable by the next.
//!
//! A segment file is a sequence of frames: `len: u32 LE`, `crc: u32 LE` = CRC32C of the body,
//! then `len` bytes of body. The body is a fixed header followed by `count` records:
//!
//! ```text
//! version u8 (=1) | flags u8 | count u32 | base_offset u64 | append_time_ms i64
//! | producer u64 | sequence u64
//! then per record: key_len i32 (-1 = no key) | key | value_len u32 | value
//! ```
//!
//! Flags: bit 0 = part of a transaction, bit 1 = last batch of the transaction (its commit),
//! bit 2 = a gap: `count` offsets that were lost (damage `keel topic repair` moved aside, or a
//! write that was cut off) and are never served; a gap batch holds no records. Bit 3 = first
//! batch of a transaction (written since issue 12; a transaction batch without it, after
//! damage, is known to have lost its start).
//!
//! Size limits are one set of constants for writer and reader: the reader accepts any frame body
//! up to `MAX_BODY`, and the writer never writes a larger one, because a single record may hold
//! at most `MAX_RECORD_BYTES` (key and value together; a topic's own `max_message_bytes` is at
//! most that) and batches of several records stay near `TARGET_BATCH_BYTES`.

pub(crate) const FRAME_HEADER: usize = 8;
pub(crate) const BODY_HEADER: usize = 1 + 1 + 4 + 8 + 8 + 8 + 8;
pub(crate) const VERSION: u8 = 1;
pub(crate) const FLAG_TXN: u8 = 1;
pub(crate) const FLAG_TXN_LAST: u8 = 2;
pub(crate) const FLAG_GAP: u8 = 4;
pub(crate) const FLAG_TXN_FIRST: u8 = 8;
/// Largest frame body accepted; a larger length field is treated as corruption. Keel 0.1 readers
/// had the same bound, so every frame ever written by a Keel writer is within it.
pub(crate) const MAX_BODY: usize = 256 << 20;
/// Bytes of a record's framing inside a batch body: its key length and value length fields.
pub(crate) const RECORD_OVERHEAD: usize = 8;
/// The largest record (key plus value bytes) any topic accepts: a batch holding one such record
/// is exactly `MAX_BODY` long, so whatever the writer accepts, the reader reads.
pub const MAX_RECORD_BYTES: u64 = (MAX_BODY - BODY_HEADER - RECORD_OVERHEAD) as u64;
/// A new topic's record size limit unless configured (Kafka's `max.message.bytes` default).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1 << 20;
/// Records are grouped into batches of at most about this many bytes when written.
pub(crate) const TARGET_BATCH_BYTES: usize = 1 << 20;
const _: () = assert!(TARGET_BATCH_BYTES + BODY_HEADER <= MAX_BODY, "a batch of small records must fit a frame");

/// A record to append: an optional key and a value, both opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl Record {
    pub fn new(key: Option<Vec<u8>>, value: Vec<u8>) -> Self {
        Record { key, value }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        RECORD_OVERHEAD + self.size()
    }

    /// The bytes a topic's record size limit counts: key and value.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.len()
    }
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub flags: u8,
    pub count: u32,
    pub base_offset: u64,
    pub append_time_ms: i64,
    pub producer: u64,
    pub sequence: u64,
}

impl BatchHeader {
    pub fn is_txn(&self) -> bool {
        self.flags & FLAG_TXN != 0
    }
    pub fn is_txn_last(&self) -> bool {
        self.flags & FLAG_TXN_LAST != 0
    }
    pub fn is_gap(&self) -> bool {
        self.flags & FLAG_GAP != 0
    }
    pub fn is_txn_first(&self) -> bool {
        self.flags & FLAG_TXN_FIRST != 0
    }
    /// The offset after this batch (saturating: a damaged header cannot overflow it).
    pub fn next_offset(&self) -> u64 {
        self.base_offset.saturating_add(u64::from(self.count))
    }
}

/// Appends one framed batch holding `records` to `out`. The caller checked every record against
/// the topic's limit (at most `MAX_RECORD_BYTES`), so the body fits `MAX_BODY`.
pub(crate) fn encode_batch(out: &mut Vec<u8>, header: &BatchHeader, records: &[Record]) {
    debug_assert!(records.len() == header.count as usize || header.is_gap() && records.is_empty());
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    out.push(VERSION);
    out.push(header.flags);
    out.extend_from_slice(&header.count.to_le_bytes());
    out.extend_from_slice(&header.base_offset.to_le_bytes());
    out.extend_from_slice(&header.append_time_ms.to_le_bytes());
    out.extend_from_slice(&header.producer.to_le_bytes());
    out.extend_from_slice(&header.sequence.to_le_bytes());
    for r in records {
        match &r.key {
            Some(k) => {
                out.extend_from_slice(&(k.len() as i32).to_le_bytes());
                out.extend_from_slice(k);
            }
            None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        }
        out.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.value);
    }
    let body = &out[start + FRAME_HEADER..];
    assert!(body.len() <= MAX_BODY, "invariant: a written frame body ({} bytes) fits MAX_BODY", body.len());
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What one frame at a position in a buffer turned out to be.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A complete, CRC-valid batch occupying `len` bytes (frame header included).
    Batch { header: BatchHeader, len: usize },
    /// The buffer ends before the frame does (a tail still being written, or torn).
    Incomplete,
    /// The frame is complete but damaged.
    Bad(String),
}

impl Frame {
    pub fn is_batch(&self) -> bool {
        matches!(self, Frame::Batch { .. })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses a frame's length and batch header from its first `FRAME_HEADER + BODY_HEADER` bytes,
/// without the records or a CRC check. `None` if the bytes cannot be a frame header.
pub(crate) fn parse_header(buf: &[u8]) -> Option<(usize, BatchHeader)> {
    if buf.len() < FRAME_HEADER + BODY_HEADER {
        return None;
    }
    let len = u32_at(buf, 0) as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&len) {
        return None;
    }
    Some((FRAME_HEADER + len, header_ignoring_length(buf)?))
}

/// Reads the frame at the start of `buf`, checking its CRC when `verify` is set.
pub(crate) fn read_frame(buf: &[u8], verify: bool) -> Frame {
    if buf.len() < FRAME_HEADER {
        return Frame::Incomplete;
    }
    let len = u32_at(buf, 0) as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&len) {
        return Frame::Bad(format!("frame length {len} is out of range"));
    }
    if buf.len() < FRAME_HEADER + len {
        return Frame::Incomplete;
    }
    let body = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if verify {
        let crc = u32_at(buf, 4);
        let actual = crc32c::crc32c(body);
        if crc != actual {
            return Frame::Bad(format!("CRC32C mismatch (stored {crc:08x}, computed {actual:08x})"));
        }
    }
    if body[0] != VERSION {
        return Frame::Bad(format!("unknown batch format version {}", body[0]));
    }
    match parse_header(buf) {
        Some((_, header)) => Frame::Batch { header, len: FRAME_HEADER + len },
        None => Frame::Bad("unreadable batch header".to_string()),
    }
}

/// Calls `f(key, value)` for each record in a CRC-checked batch body; `Err` names what does not
/// add up (a valid CRC over records that do not parse: a writer bug or a hand-made frame).
pub(crate) fn for_each_record<'a>(
    frame: &'a [u8],
    count: u32,
    mut f: impl FnMut(Option<&'a [u8]>, &'a [u8]),
) -> std::result::Result<(), &'static str> {
    let mut at = FRAME_HEADER + BODY_HEADER;
    for _ in 0..count {
        if at + 4 > frame.len() {
            return Err("record header runs past the batch");
        }
        let klen = u32_at(frame, at) as i32;
        at += 4;
        let key = if klen < 0 {
            None
        } else {
            let end = at + klen as usize;
            if end > frame.len() {
                return Err("record key runs past the batch");
            }
            let k = &frame[at..end];
            at = end;
            Some(k)
        };
        if at + 4 > frame.len() {
            return Err("record value length runs past the batch");
        }
        let vlen = u32_at(frame, at) as usize;
        at += 4;
        if at + vlen > frame.len() {
            return Err("record value runs past the batch");
        }
        f(key, &frame[at..at + vlen]);
        at += vlen;
    }
    if at != frame.len() {
        return Err("batch has bytes after its last record");
    }
    Ok(())
}

/// Appends gap batches covering offsets `from..to` (several when the range exceeds a batch's
/// count), as `keel topic repair` writes in place of a damaged range.
pub(crate) fn encode_gap(out: &mut Vec<u8>, from: u64, to: u64, append_time_ms: i64) {
    let mut at = from;
    while at < to {
        let count = (to - at).min(u64::from(u32::MAX)) as u32;
        let header = BatchHeader { flags: FLAG_GAP, count, base_offset: at, append_time_ms, producer: 0, sequence: 0 };
        encode_batch(out, &header, &[]);
        at += u64::from(count);
    }
}

/// Where valid data resumes after damage that starts at `from`: the first position at or after
/// `search` that holds a complete, CRC-valid frame, with its header. A frame must end within
/// `data`. With `expected`, its batch must also start at or after that offset, at an offset the
/// damaged bytes could have held (every record takes at least `RECORD_OVERHEAD` bytes), so a
/// stray frame from elsewhere never makes up a gap of billions of offsets; without, any valid
/// frame counts (to tell damage from a torn tail, which nothing valid follows). `None`: nothing
/// valid follows.
pub(crate) fn find_resume(
    data: &[u8],
    from: usize,
    search: usize,
    expected: Option<u64>,
) -> Option<(usize, BatchHeader)> {
    let mut at = search.max(from);
    while at + FRAME_HEADER + BODY_HEADER <= data.len() {
        // Cheap filters first: the version byte, a plausible length, a plausible offset.
        if data[at + FRAME_HEADER] == VERSION
            && let Some((len, header)) = parse_header(&data[at..])
            && at + len <= data.len()
            && expected.is_none_or(|e| {
                header.base_offset >= e && header.base_offset - e <= ((at - from) / RECORD_OVERHEAD) as u64
            })
            && let Frame::Batch { .. } = read_frame(&data[at..at + len], true)
        {
            return Some((at, header));
        }
        at += 1;
    }
    None
}

/// The header of the frame at the start of `buf`, read even when its length field is damaged
/// or the frame is cut short (for a torn tail's offsets); `None` if too short or not version 1.
pub(crate) fn header_ignoring_length(buf: &[u8]) -> Option<BatchHeader> {
    if buf.len() < FRAME_HEADER + BODY_HEADER || buf[FRAME_HEADER] != VERSION {
        return None;
    }
    let body = &buf[FRAME_HEADER..];
    Some(BatchHeader {
        flags: body[1],
        count: u32_at(body, 2),
        base_offset: u64_at(body, 6),
        append_time_ms: u64_at(body, 14) as i64,
        producer: u64_at(body, 22),
        sequence: u64_at(body, 30),
    })
}

/// Segment file name for a base offset.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// Base offset from a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".log").filter(|s| s.len() == 20).and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base: u64, count: u32) -> BatchHeader {
        BatchHeader { flags: 0, count, base_offset: base, append_time_ms: 7, producer: 0, sequence: 0 }
    }

    #[test]
    fn roundtrip_and_crc_detects_any_flipped_bit() {
        let recs = vec![Record::new(Some(b"k".to_vec()), b"hello".to_vec()), Record::new(None, b"".to_vec())];
        let mut buf = vec![];
        encode_batch(&mut buf, &header(5, 2), &recs);
        let Frame::Batch { header: h, len } = read_frame(&buf, true) else { panic!("not a batch") };
        assert_eq!((h.base_offset, h.count, len), (5, 2, buf.len()));
        let mut got = vec![];
        for_each_record(&buf, 2, |k, v| got.push((k.map(<[u8]>::to_vec), v.to_vec()))).unwrap();
        assert_eq!(got, vec![(Some(b"k".to_vec()), b"hello".to_vec()), (None, vec![])]);
        for byte in FRAME_HEADER..buf.len() {
            let mut damaged = buf.clone();
            damaged[byte] ^= 0x10;
            assert!(matches!(read_frame(&damaged, true), Frame::Bad(_)), "flip at {byte} not detected");
        }
        for cut in 0..buf.len() {
            assert!(matches!(read_frame(&buf[..cut], true), Frame::Incomplete | Frame::Bad(_)));
        }
    }

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("producers.json"), None);
    }
}
