//! The job's completion record: which checkpoint's output the sinks may have committed, the
//! highest checkpoint id ever taken, and a second copy of each retained checkpoint's manifest.
//! Recovery compares it with the checkpoint directories: a damaged manifest is replaced by its
//! copy, and a checkpoint whose output was committed is never silently replaced by an older one
//! (restoring the older one would commit that output again).
//!
//! On disk: two slots, `_completed.0` and `_completed.1`, written alternately in place (the
//! record with sequence `k` goes to slot `k % 2`), each `MAGIC | length u32 | crc32c u32 | JSON`.
//!
//! Invariants: a slot is fsynced before the coordinator tells any sink to commit the checkpoint
//! it names; the slot being written is never the one holding the newest valid record, so a write
//! torn by a crash (or one damaged slot) still leaves the previous record readable; readers take
//! the valid slot with the highest sequence and ignore a slot whose length or CRC fails; `max_id`
//! never decreases, so a checkpoint id is never used twice (a sink's commit of a reused id would
//! be taken for a repeat and dropped).

use crate::{Manifest, Result, StateError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"KEELCMP1";
const SLOTS: [&str; 2] = ["_completed.0", "_completed.1"];
/// A record larger than this is damage (it holds a few manifests of a few hundred bytes each).
const MAX_RECORD: usize = 64 << 20;

/// What the record says (see the module comment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRecord {
    /// Increases with every write; the slot is `sequence % 2`.
    pub sequence: u64,
    /// The newest checkpoint whose output sinks may have committed (told to commit), or that an
    /// operator chose to restore, accepting repeated output.
    pub committed: u64,
    /// The highest checkpoint id ever taken.
    pub max_id: u64,
    /// Manifests of the retained complete checkpoints, newest first.
    pub manifests: Vec<Manifest>,
}

impl CompletionRecord {
    /// The manifest copy of checkpoint `id`, if the record holds one.
    pub fn manifest(&self, id: u64) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.checkpoint_id == id)
    }
}

fn encode(record: &CompletionRecord) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(record).map_err(|e| StateError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(json.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

fn decode(bytes: &[u8]) -> std::result::Result<CompletionRecord, String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not a completion record (wrong header)".into());
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if len > MAX_RECORD || bytes.len() != 16 + len {
        return Err(format!("its length field says {len} bytes, the file has {}", bytes.len().saturating_sub(16)));
    }
    let json = &bytes[16..];
    if crc32c::crc32c(json) != crc {
        return Err("CRC32C mismatch".into());
    }
    serde_json::from_slice(json).map_err(|e| format!("unreadable JSON: {e}"))
}

/// The newest valid record in `dir`, and a description of each slot that exists but is damaged.
pub(crate) fn read(dir: &Path) -> Result<(Option<CompletionRecord>, Vec<String>)> {
    let mut best: Option<CompletionRecord> = None;
    let mut problems = vec![];
    for slot in SLOTS {
        let path = dir.join(slot);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StateError::io("cannot read", &path)(e)),
        };
        match decode(&bytes) {
            Ok(r) if best.as_ref().is_none_or(|b| r.sequence > b.sequence) => best = Some(r),
            Ok(_) => {}
            Err(reason) => problems.push(format!("{} is damaged ({reason})", path.display())),
        }
    }
    Ok((best, problems))
}

/// Writes `record` into its slot in place and fsyncs it (and the directory, the first time). A
/// record too large to read back (`MAX_RECORD`: many retained checkpoints of many subtasks)
/// keeps the copies of its newest manifests that fit; the newest one always.
pub(crate) fn write(dir: &Path, record: &CompletionRecord) -> Result<()> {
    let path = dir.join(SLOTS[(record.sequence % 2) as usize]);
    let new = !path.exists();
    let mut bytes = encode(record)?;
    if bytes.len() > MAX_RECORD + 16 {
        let mut trimmed = record.clone();
        while bytes.len() > MAX_RECORD + 16 && trimmed.manifests.len() > 1 {
            trimmed.manifests.pop();
            bytes = encode(&trimmed)?;
        }
        if bytes.len() > MAX_RECORD + 16 {
            return Err(StateError::Encode(format!(
                "the completion record of checkpoint {} would take {} bytes, above the {MAX_RECORD} a record may \
                 have (a manifest of that many state files)",
                record.committed,
                bytes.len()
            )));
        }
    }
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StateError::io("cannot open", &path))?;
    f.write_all(&bytes).map_err(StateError::io("cannot write", &path))?;
    f.set_len(bytes.len() as u64).map_err(StateError::io("cannot write", &path))?;
    f.sync_all().map_err(StateError::io("cannot fsync", &path))?;
    if new {
        File::open(dir).and_then(|d| d.sync_all()).map_err(StateError::io("cannot fsync directory", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64, committed: u64) -> CompletionRecord {
        CompletionRecord { sequence, committed, max_id: committed, manifests: vec![] }
    }

    #[test]
    fn the_newest_valid_slot_wins_and_a_damaged_slot_leaves_the_other() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap().0, None);
        write(dir.path(), &record(1, 5)).unwrap();
        write(dir.path(), &record(2, 6)).unwrap();
        assert_eq!(read(dir.path()).unwrap().0.unwrap().committed, 6);
        // Slot 0 (sequence 2) damaged: slot 1 (sequence 1) is still there.
        let slot = dir.path().join(SLOTS[0]);
        let mut bytes = std::fs::read(&slot).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        std::fs::write(&slot, &bytes).unwrap();
        let (r, problems) = read(dir.path()).unwrap();
        assert_eq!(r.unwrap().committed, 5);
        assert!(problems[0].contains("CRC32C mismatch"), "{problems:?}");
        // The next write goes after the newest valid record (sequence 2, slot 0); torn half-way
        // by a crash, it leaves sequence 1 readable.
        write(dir.path(), &record(2, 7)).unwrap();
        let slot = dir.path().join(SLOTS[0]);
        let bytes = std::fs::read(&slot).unwrap();
        std::fs::write(&slot, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(read(dir.path()).unwrap().0.unwrap().committed, 5);
        // A shorter record over a longer one leaves no stale tail.
        write(dir.path(), &record(2, 8)).unwrap();
        write(dir.path(), &record(3, 9)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), (Some(record(3, 9)), vec![]));
    }
}
