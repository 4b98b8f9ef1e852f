//! Choosing the checkpoint a job restores, with single-file damage repaired and without ever
//! repeating committed output behind the operator's back.
//!
//! A checkpoint is usable when its manifest (the one in its directory, or the completion
//! record's copy when that one is missing, unreadable or different) names files that all match
//! their sizes and CRC32Cs, after rebuilding at most one damaged state file from the parity.
//! Repairs are written back (the damaged bytes kept in the checkpoint's `_damaged/`) and
//! reported.
//!
//! Invariants:
//! - with `Choice::Newest`, the checkpoint restored is never older than the completion record's
//!   `committed` (the newest checkpoint whose output sinks were told to commit): when nothing
//!   that new is usable, recovery refuses (`StateError::WouldRepeatOutput`), naming the damage,
//!   the newest usable checkpoint and what restoring it would repeat;
//! - with `Choice::Accept(n)` (the operator chose), checkpoint `n` is restored if usable; newer
//!   checkpoint directories are moved aside into `_set_aside/` (kept, never deleted) and the
//!   record's `committed` becomes `n`, so later restarts do not refuse again;
//! - the next checkpoint id is above every id ever used (directories and the record's
//!   `max_id`), so an id is never reused;
//! - a checkpoint restored that is newer than the record's `committed` (its manifest was
//!   written, the record not yet) is recorded as committed before recovery returns: restoring
//!   it commits its staged output, so from then on nothing older may replace it.

use crate::parity::rebuild;
use crate::record::CompletionRecord;
use crate::store::{MANIFEST, chk_dir_name};
use crate::{CheckpointStore, CompletedCheckpoint, Manifest, ManifestFile, Result, StateError, write_json_atomic};
use std::fs;
use std::path::Path;

/// Which checkpoint to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The newest usable one, refusing one older than the committed output.
    Newest,
    /// Checkpoint `n`, which the operator chose knowing that output committed after it is
    /// written again.
    Accept(u64),
}

/// What recovery decided.
#[derive(Debug)]
pub struct Recovery {
    /// The checkpoint to restore (`None`: start from the beginning).
    pub checkpoint: Option<CompletedCheckpoint>,
    /// The id the next checkpoint takes.
    pub next_id: u64,
    /// Repairs made and damage passed over, for the job's log.
    pub notes: Vec<String>,
}

/// Why a checkpoint cannot be used as it is.
enum Unusable {
    /// It never completed (no manifest, no copy): not damage.
    Incomplete,
    Damaged(String),
}

impl CheckpointStore {
    /// Chooses (and repairs) the checkpoint to restore; see the module comment.
    pub fn recover(&self, choice: Choice) -> Result<Recovery> {
        let (record, problems) = self.completion_record()?;
        let mut notes: Vec<String> = problems.into_iter().map(|p| format!("completion record: {p}")).collect();
        let mut ids = self.ids()?;
        if let Some(r) = &record {
            ids.extend(r.manifests.iter().map(|m| m.checkpoint_id));
        }
        ids.sort_unstable();
        ids.dedup();
        let mut damaged: Vec<(u64, String)> = vec![];
        let mut found = None;
        for &id in ids.iter().rev() {
            if let Choice::Accept(n) = choice
                && id > n
            {
                continue;
            }
            match self.open_checkpoint(id, record.as_ref(), &mut notes) {
                Ok(c) => {
                    found = Some(c);
                    break;
                }
                Err(Unusable::Incomplete) => {}
                Err(Unusable::Damaged(reason)) => {
                    notes.push(format!("checkpoint {id} is unusable: {reason}"));
                    damaged.push((id, reason));
                }
            }
        }
        let committed = record.as_ref().map(|r| r.committed);
        let max_id = ids.last().copied().unwrap_or(0).max(record.as_ref().map_or(0, |r| r.max_id));
        match choice {
            Choice::Newest => {
                if let Some(c) = committed
                    && found.as_ref().is_none_or(|f| f.id < c)
                {
                    return Err(StateError::WouldRepeatOutput {
                        dir: self.dir().to_path_buf(),
                        committed: c,
                        usable: found.as_ref().map(|f| f.id),
                        damage: damaged.iter().map(|(id, r)| format!("checkpoint {id}: {r}")).collect(),
                    });
                }
                if let Some(f) = &found
                    && committed.is_none_or(|c| f.id > c)
                {
                    let mut manifests = vec![f.manifest.clone()];
                    if let Some(r) = &record {
                        manifests.extend(r.manifests.iter().filter(|m| m.checkpoint_id < f.id).cloned());
                    }
                    self.write_record(&CompletionRecord {
                        sequence: record.as_ref().map_or(1, |r| r.sequence + 1),
                        committed: f.id,
                        max_id,
                        manifests,
                    })?;
                }
            }
            Choice::Accept(n) => {
                // Going back is for passing over damage only: a newer usable checkpoint means the
                // option was left in place (a service definition, say) and would repeat output.
                for &newer in ids.iter().rev().filter(|&&id| id > n) {
                    if self.open_checkpoint(newer, record.as_ref(), &mut notes).is_ok() {
                        return Err(StateError::NotRestorable {
                            checkpoint: n,
                            reason: format!(
                                "checkpoint {newer}, newer, is intact; --from-checkpoint only goes back past damaged \
                                 checkpoints (it would repeat the output committed after {n}): run without it"
                            ),
                        });
                    }
                }
                if found.as_ref().is_none_or(|f| f.id != n) {
                    return Err(StateError::NotRestorable {
                        checkpoint: n,
                        reason: damaged
                            .iter()
                            .find(|(id, _)| *id == n)
                            .map_or_else(|| "it does not exist or never completed".to_string(), |(_, r)| r.clone()),
                    });
                }
                self.set_aside_after(n, &ids, &mut notes)?;
                let record = CompletionRecord {
                    sequence: record.as_ref().map_or(1, |r| r.sequence + 1),
                    committed: n,
                    max_id,
                    manifests: record
                        .map(|r| r.manifests.into_iter().filter(|m| m.checkpoint_id <= n).collect())
                        .unwrap_or_default(),
                };
                self.write_record(&record)?;
            }
        }
        Ok(Recovery { next_id: max_id.max(found.as_ref().map_or(0, |f| f.id)) + 1, checkpoint: found, notes })
    }

    /// Moves the checkpoint directories newer than `n` into `_set_aside/` (kept for inspection).
    fn set_aside_after(&self, n: u64, ids: &[u64], notes: &mut Vec<String>) -> Result<()> {
        let aside = self.dir().join("_set_aside");
        for &id in ids.iter().filter(|&&id| id > n) {
            let dir = self.dir().join(chk_dir_name(id));
            if !dir.exists() {
                continue;
            }
            fs::create_dir_all(&aside).map_err(StateError::io("cannot create", &aside))?;
            let mut to = aside.join(chk_dir_name(id));
            let mut k = 1;
            while to.exists() {
                to = aside.join(format!("{}.{k}", chk_dir_name(id)));
                k += 1;
            }
            fs::rename(&dir, &to).map_err(StateError::io("cannot move aside", &dir))?;
            notes.push(format!("checkpoint {id} moved to {} (newer than the one chosen)", to.display()));
        }
        Ok(())
    }

    /// Opens checkpoint `id`: its manifest (or the record's copy), its files verified, one
    /// damaged file rebuilt from the parity.
    fn open_checkpoint(
        &self,
        id: u64,
        record: Option<&CompletionRecord>,
        notes: &mut Vec<String>,
    ) -> std::result::Result<CompletedCheckpoint, Unusable> {
        let dir = self.dir().join(chk_dir_name(id));
        let copy = record.and_then(|r| r.manifest(id));
        let manifest = match (read_manifest(&dir, id), copy) {
            (Ok(Some(m)), Some(c)) if m == *c => m,
            (Ok(Some(_)), Some(c)) => {
                restore_manifest(&dir, c, "differs from its copy in the completion record", notes)?;
                c.clone()
            }
            (Ok(Some(m)), None) => m,
            (Ok(None), Some(c)) => {
                restore_manifest(&dir, c, "is missing", notes)?;
                c.clone()
            }
            (Err(reason), Some(c)) => {
                restore_manifest(&dir, c, &format!("is damaged ({reason})"), notes)?;
                c.clone()
            }
            (Ok(None), None) => return Err(Unusable::Incomplete),
            (Err(reason), None) => return Err(Unusable::Damaged(format!("its manifest is damaged ({reason})"))),
        };
        let bad: Vec<(&ManifestFile, String)> =
            manifest.files.iter().filter_map(|f| check_file(&dir, f).err().map(|r| (f, r))).collect();
        match (bad.as_slice(), &manifest.parity) {
            ([], Some(parity)) => {
                if let Err(reason) = check_file(&dir, parity) {
                    // The files are intact: the parity is written again, so that it still
                    // protects them.
                    match crate::parity::write_parity(&dir, &manifest.files) {
                        Ok(Some(again)) if again == *parity => {
                            notes.push(format!("checkpoint {id}: its parity {reason}; written again from its files"))
                        }
                        _ => {
                            notes.push(format!("checkpoint {id}: its parity {reason}, and could not be written again"))
                        }
                    }
                }
            }
            ([], None) => {}
            ([(file, reason)], Some(parity)) => match check_file(&dir, parity) {
                Ok(()) => {
                    rebuild(&dir, &manifest.files, parity, file).map_err(|e| {
                        Unusable::Damaged(format!("state file {} {reason}, and rebuilding it failed: {e}", file.name))
                    })?;
                    notes.push(format!(
                        "checkpoint {id}: state file {} {reason}; rebuilt from the checkpoint's parity (the damaged \
                         bytes are kept in {})",
                        file.name,
                        dir.join("_damaged").display()
                    ));
                }
                Err(p) => {
                    return Err(Unusable::Damaged(format!(
                        "state file {} {reason}, and its parity {p} too",
                        file.name
                    )));
                }
            },
            ([(file, reason)], None) => {
                return Err(Unusable::Damaged(format!("state file {} {reason} (no parity to rebuild it)", file.name)));
            }
            (many, _) => {
                let names: Vec<String> = many.iter().map(|(f, r)| format!("{} {r}", f.name)).collect();
                return Err(Unusable::Damaged(format!(
                    "{} state files are damaged ({}); parity rebuilds one",
                    many.len(),
                    names.join("; ")
                )));
            }
        }
        Ok(CompletedCheckpoint { id, dir, manifest })
    }
}

/// The manifest in `dir`: `Ok(None)` when there is none, `Err` when it is unreadable or names
/// another checkpoint or an unknown format.
fn read_manifest(dir: &Path, id: u64) -> std::result::Result<Option<Manifest>, String> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let m: Manifest = keel_types::checked_json::from_slice(&bytes)?;
    if m.format_version != crate::store::FORMAT_VERSION || m.checkpoint_id != id {
        return Err(format!("it is for checkpoint {} in format {}", m.checkpoint_id, m.format_version));
    }
    Ok(Some(m))
}

/// Writes the record's copy of a manifest back into the checkpoint's directory, keeping a
/// damaged one aside.
fn restore_manifest(
    dir: &Path,
    copy: &Manifest,
    why: &str,
    notes: &mut Vec<String>,
) -> std::result::Result<(), Unusable> {
    let path = dir.join(MANIFEST);
    let fail = |e: StateError| Unusable::Damaged(format!("its manifest {why}, and writing its copy back failed: {e}"));
    if !dir.exists() {
        return Err(Unusable::Damaged(format!("its directory {} is gone", dir.display())));
    }
    if path.exists() {
        let aside = dir.join("_damaged");
        fs::create_dir_all(&aside).map_err(|e| fail(StateError::io("cannot create", &aside)(e)))?;
        fs::rename(&path, aside.join(MANIFEST)).map_err(|e| fail(StateError::io("cannot move aside", &path)(e)))?;
    }
    write_json_atomic(&path, copy).map_err(fail)?;
    notes.push(format!("checkpoint {}: its manifest {why}; restored from the completion record", copy.checkpoint_id));
    Ok(())
}

/// Whether a state file matches its manifest entry; `Err` says how it does not. Reads the file
/// a block at a time, so a state of GBs is not held in memory to be checked.
fn check_file(dir: &Path, f: &ManifestFile) -> std::result::Result<(), String> {
    use std::io::Read;
    let path = dir.join(&f.name);
    let mut file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("is missing".into()),
        Err(e) => return Err(format!("cannot be read ({e})")),
    };
    let len = file.metadata().map_err(|e| format!("cannot be read ({e})"))?.len();
    if len != f.size {
        return Err(format!("has {len} bytes where the manifest says {}", f.size));
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("cannot be read ({e})"))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
    if crc != f.crc32c {
        return Err("fails its CRC32C".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MANIFEST;

    /// Checkpoint `id` with two state files (so that parity is not a plain copy).
    fn write(store: &CheckpointStore, id: u64) {
        let mut w = store.writer(id).unwrap();
        w.put("a", format!("state a of {id}").as_bytes()).unwrap();
        w.put("b", format!("the state b of checkpoint {id}").as_bytes()).unwrap();
        w.commit(serde_json::json!({ "run": 1 })).unwrap();
    }

    fn chk(dir: &Path, id: u64) -> std::path::PathBuf {
        dir.join(chk_dir_name(id))
    }

    #[test]
    fn one_damaged_or_lost_file_of_the_newest_checkpoint_is_repaired_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        for id in 1..=3 {
            write(&store, id);
        }
        // A flipped byte in a state file: rebuilt from the parity, the damage kept aside.
        let a = chk(dir.path(), 3).join("a");
        let mut bytes = fs::read(&a).unwrap();
        bytes[2] ^= 0x40;
        fs::write(&a, &bytes).unwrap();
        let r = store.recover(Choice::Newest).unwrap();
        assert_eq!(r.checkpoint.as_ref().unwrap().id, 3);
        assert_eq!(r.checkpoint.unwrap().read("a").unwrap(), b"state a of 3");
        assert!(r.notes.iter().any(|n| n.contains("rebuilt from the checkpoint's parity")), "{:?}", r.notes);
        assert_eq!(fs::read(chk(dir.path(), 3).join("_damaged/a")).unwrap(), bytes);
        assert_eq!(r.next_id, 4);
        // A lost file, a truncated one, a deleted parity: each alone costs nothing.
        fs::remove_file(chk(dir.path(), 3).join("b")).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().read("b").unwrap(), b"the state b of checkpoint 3");
        let b = chk(dir.path(), 3).join("b");
        let len = fs::metadata(&b).unwrap().len();
        fs::OpenOptions::new().write(true).open(&b).unwrap().set_len(len - 4).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().read("b").unwrap(), b"the state b of checkpoint 3");
        fs::remove_file(chk(dir.path(), 3).join("_parity")).unwrap();
        let r = store.recover(Choice::Newest).unwrap();
        assert_eq!(r.checkpoint.unwrap().id, 3);
        assert!(r.notes.iter().any(|n| n.contains("its parity is missing; written again")), "{:?}", r.notes);
        // The parity written again protects the files as before.
        fs::write(chk(dir.path(), 3).join("a"), b"gone").unwrap();
        assert_eq!(store.latest().unwrap().unwrap().read("a").unwrap(), b"state a of 3");
    }

    #[test]
    fn a_garbled_or_missing_manifest_is_restored_from_the_completion_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        for id in 1..=3 {
            write(&store, id);
        }
        let original = fs::read(chk(dir.path(), 3).join(MANIFEST)).unwrap();
        // A digit changed in a CRC still parses: the copy tells it apart.
        let text = String::from_utf8(original.clone()).unwrap();
        let garbled = text.replacen("\"crc32c\": 1", "\"crc32c\": 2", 1).replacen("\"crc32c\": 2", "\"crc32c\": 3", 1);
        assert_ne!(garbled, text);
        fs::write(chk(dir.path(), 3).join(MANIFEST), &garbled).unwrap();
        let r = store.recover(Choice::Newest).unwrap();
        assert_eq!(r.checkpoint.unwrap().id, 3);
        assert_eq!(fs::read(chk(dir.path(), 3).join(MANIFEST)).unwrap(), original, "written back");
        // Every manifest gone: all three come back from their copies.
        for id in 1..=3 {
            fs::remove_file(chk(dir.path(), id).join(MANIFEST)).unwrap();
        }
        let r = store.recover(Choice::Newest).unwrap();
        assert_eq!(r.checkpoint.unwrap().id, 3);
        assert_eq!(fs::read(chk(dir.path(), 3).join(MANIFEST)).unwrap(), original);
        // With the newest beyond repair, the one before comes back from its copy too.
        fs::write(chk(dir.path(), 3).join("a"), b"x").unwrap();
        fs::write(chk(dir.path(), 3).join("b"), b"y").unwrap();
        let r = store.recover(Choice::Accept(2)).unwrap();
        assert_eq!(r.checkpoint.unwrap().id, 2);
        assert!(chk(dir.path(), 2).join(MANIFEST).exists());
    }

    #[test]
    fn falling_back_past_committed_output_is_refused_until_the_operator_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        for id in 1..=3 {
            write(&store, id);
        }
        // Two files of checkpoint 3 damaged: beyond the parity.
        fs::write(chk(dir.path(), 3).join("a"), b"x").unwrap();
        fs::write(chk(dir.path(), 3).join("b"), b"y").unwrap();
        let err = store.recover(Choice::Newest).unwrap_err();
        assert_eq!(err.class(), keel_types::ErrorClass::Damaged);
        let msg = err.to_string();
        assert!(msg.contains("Checkpoint 3 completed and its output was committed"), "{msg}");
        assert!(msg.contains("--from-checkpoint 2") && msg.contains("2 state files are damaged"), "{msg}");
        assert_eq!(fs::read(chk(dir.path(), 3).join("a")).unwrap(), b"x", "nothing changed");
        // A checkpoint that is not usable cannot be chosen.
        let err = store.recover(Choice::Accept(3)).unwrap_err();
        assert!(matches!(err, StateError::NotRestorable { checkpoint: 3, .. }), "{err}");
        let r = store.recover(Choice::Accept(2)).unwrap();
        assert_eq!(r.checkpoint.unwrap().id, 2);
        assert_eq!(r.next_id, 4, "checkpoint 3's id is never used again");
        assert!(dir.path().join("_set_aside").join(chk_dir_name(3)).join("a").exists(), "kept, set aside");
        // The choice is remembered: the next start does not refuse, and ids keep growing.
        let r = store.recover(Choice::Newest).unwrap();
        assert_eq!((r.checkpoint.unwrap().id, r.next_id), (2, 4));
        write(&store, 4);
        assert_eq!(store.latest().unwrap().unwrap().id, 4);
        // The option left in place would go back again: refused, since 4 is intact.
        let err = store.recover(Choice::Accept(2)).unwrap_err();
        assert!(err.to_string().contains("checkpoint 4, newer, is intact"), "{err}");
        assert_eq!(store.latest().unwrap().unwrap().id, 4);
    }

    #[test]
    fn every_checkpoint_and_manifest_lost_with_committed_output_refuses_to_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        write(&store, 1);
        write(&store, 2);
        for id in 1..=2 {
            fs::remove_dir_all(chk(dir.path(), id)).unwrap();
        }
        let err = store.recover(Choice::Newest).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("starting over would write") && msg.contains("--fresh"), "{msg}");
        assert!(msg.contains("its directory") && msg.contains("is gone"), "{msg}");
    }

    #[test]
    fn a_checkpoint_whose_output_was_never_committed_may_be_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        write(&store, 1);
        write(&store, 2);
        // Checkpoint 3's manifest is durable but the process died before the completion record
        // named it: no sink was told to commit it, so going back to 2 repeats nothing.
        let record = fs::read(dir.path().join("_completed.0")).unwrap();
        write(&store, 3);
        fs::write(dir.path().join("_completed.1"), b"").unwrap();
        fs::write(dir.path().join("_completed.0"), &record).unwrap();
        assert_eq!(store.completion_record().unwrap().0.unwrap().committed, 2);
        fs::write(chk(dir.path(), 3).join("a"), b"x").unwrap();
        fs::write(chk(dir.path(), 3).join("b"), b"y").unwrap();
        let r = store.recover(Choice::Newest).unwrap();
        assert_eq!(r.checkpoint.unwrap().id, 2);
        assert_eq!(r.next_id, 4);
    }

    #[test]
    fn checkpoints_of_keel_0_1_without_record_or_parity_still_restore() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap().with_parity(false);
        write(&store, 1);
        write(&store, 2);
        for slot in ["_completed.0", "_completed.1"] {
            let _ = fs::remove_file(dir.path().join(slot));
        }
        assert!(!fs::read_to_string(chk(dir.path(), 2).join(MANIFEST)).unwrap().contains("parity"));
        // Without a record there is no knowledge of commits: damage falls back as before, and
        // the checkpoint restored is recorded from then on.
        fs::write(chk(dir.path(), 2).join("a"), b"x").unwrap();
        let r = store.recover(Choice::Newest).unwrap();
        assert_eq!(r.checkpoint.unwrap().id, 1);
        assert!(r.notes.iter().any(|n| n.contains("no parity to rebuild it")), "{:?}", r.notes);
        assert_eq!(store.completion_record().unwrap().0.unwrap().committed, 1);
    }

    #[test]
    fn restoring_a_checkpoint_the_record_does_not_name_yet_records_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        write(&store, 1);
        write(&store, 2);
        // The record of checkpoint 2 (sequence 2, slot 0) never made it to disk.
        fs::write(dir.path().join("_completed.0"), b"").unwrap();
        assert_eq!(store.completion_record().unwrap().0.unwrap().committed, 1);
        // Restoring 2 commits its staged output: the record must say so before that happens.
        assert_eq!(store.latest().unwrap().unwrap().id, 2);
        let r = store.completion_record().unwrap().0.unwrap();
        assert_eq!((r.committed, r.manifest(2).is_some()), (2, true));
        fs::write(chk(dir.path(), 2).join("a"), b"x").unwrap();
        fs::write(chk(dir.path(), 2).join("b"), b"y").unwrap();
        assert!(matches!(store.recover(Choice::Newest), Err(StateError::WouldRepeatOutput { committed: 2, .. })));
    }
}
