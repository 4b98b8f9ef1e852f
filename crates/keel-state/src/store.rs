//! Checkpoint directories: writing one atomically (state files, their parity, the manifest, the
//! completion record), opening one with its files verified, pruning old ones.
//!
//! Invariants: a checkpoint directory's files are verified against its manifest before anything
//! is restored from them; the manifest is written only after every state file and the parity are
//! fsynced; the completion record naming a checkpoint is written only after its manifest.

use crate::parity::write_parity;
use crate::record::{self, CompletionRecord};
use crate::{Result, StateError, StateFileWriter};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) const MANIFEST: &str = "_manifest.json";
pub(crate) const FORMAT_VERSION: u32 = 1;

/// One state file as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub size: u64,
    pub crc32c: u32,
}

/// What makes a checkpoint complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub checkpoint_id: u64,
    pub created_ms: i64,
    pub files: Vec<ManifestFile>,
    /// Job-level facts recorded with the checkpoint (for example the run id).
    #[serde(default)]
    pub meta: serde_json::Value,
    /// The XOR of `files`, from which any one of them can be rebuilt (absent in checkpoints of
    /// Keel 0.1 and in checkpoints without state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<ManifestFile>,
}

/// The checkpoints of one job.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    retained: usize,
    parity: bool,
}

pub(crate) fn chk_dir_name(id: u64) -> String {
    format!("chk-{id:010}")
}

fn parse_chk_dir_name(name: &str) -> Option<u64> {
    name.strip_prefix("chk-").and_then(|s| s.parse().ok())
}

impl CheckpointStore {
    /// Opens (creating) a checkpoint directory that keeps the newest `retained` checkpoints;
    /// each checkpoint's files get a parity file.
    pub fn open(dir: &Path, retained: usize) -> Result<Self> {
        fs::create_dir_all(dir).map_err(StateError::io("cannot create the checkpoint directory", dir))?;
        Ok(CheckpointStore { dir: dir.to_path_buf(), retained: retained.max(1), parity: true })
    }

    /// Whether new checkpoints get a parity file (on by default: any one damaged state file is
    /// then rebuilt on recovery; off saves the time and space of the largest state file).
    pub fn with_parity(mut self, parity: bool) -> Self {
        self.parity = parity;
        self
    }

    /// The newest valid completion record, and descriptions of damaged record slots.
    /// The newest usable checkpoint (`recover(Choice::Newest)`, repairs included), or `None`.
    pub fn latest(&self) -> Result<Option<CompletedCheckpoint>> {
        Ok(self.recover(crate::Choice::Newest)?.checkpoint)
    }

    pub fn completion_record(&self) -> Result<(Option<CompletionRecord>, Vec<String>)> {
        record::read(&self.dir)
    }

    pub(crate) fn write_record(&self, record: &CompletionRecord) -> Result<()> {
        record::write(&self.dir, record)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ids of every checkpoint directory present, complete or not, in increasing order.
    pub fn ids(&self) -> Result<Vec<u64>> {
        let mut ids = vec![];
        for entry in fs::read_dir(&self.dir).map_err(StateError::io("cannot list", &self.dir))? {
            let entry = entry.map_err(StateError::io("cannot list", &self.dir))?;
            if let Some(id) = parse_chk_dir_name(&entry.file_name().to_string_lossy()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Starts writing checkpoint `id`, replacing any incomplete leftovers of the same id.
    pub fn writer(&self, id: u64) -> Result<CheckpointWriter> {
        let dir = self.dir.join(chk_dir_name(id));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(StateError::io("cannot clear a leftover checkpoint", &dir))?;
        }
        fs::create_dir_all(&dir).map_err(StateError::io("cannot create", &dir))?;
        Ok(CheckpointWriter { id, dir, files: vec![], store: self.clone() })
    }

    /// A writer of state file `name` of checkpoint `id`, whose directory `writer(id)` made (tasks
    /// write their operators' states there while the coordinator waits for every task).
    pub fn state_file(&self, id: u64, name: &str) -> StateFileWriter {
        StateFileWriter::new(name, self.dir.join(chk_dir_name(id)).join(name))
    }

    /// Deletes the directory of checkpoint `id` if it never completed (an expired checkpoint);
    /// a complete one is never deleted here.
    pub fn discard_incomplete(&self, id: u64) -> Result<()> {
        let dir = self.dir.join(chk_dir_name(id));
        if dir.exists() && !dir.join(MANIFEST).exists() {
            fs::remove_dir_all(&dir).map_err(StateError::io("cannot delete expired checkpoint", &dir))?;
        }
        Ok(())
    }

    /// Deletes the directories of every checkpoint below `id` that never completed and whose
    /// manifest the completion record does not hold a copy of (those can still be restored).
    pub fn discard_incomplete_before(&self, id: u64) -> Result<()> {
        let (record, _) = self.completion_record()?;
        for old in self.ids()?.into_iter().filter(|&old| old < id) {
            if record.as_ref().is_none_or(|r| r.manifest(old).is_none()) {
                self.discard_incomplete(old)?;
            }
        }
        Ok(())
    }

    /// Deletes all but the newest `retained` complete checkpoints, and incomplete ones older than
    /// the newest complete one; returns the ids kept that are complete.
    fn prune(&self, newest_complete: u64) -> Result<Vec<u64>> {
        let ids = self.ids()?;
        let mut kept = vec![];
        for id in ids.into_iter().rev() {
            let dir = self.dir.join(chk_dir_name(id));
            let complete = dir.join(MANIFEST).exists();
            let keep = if complete { kept.len() < self.retained } else { id > newest_complete };
            if complete && keep {
                kept.push(id);
            }
            if !keep {
                fs::remove_dir_all(&dir).map_err(StateError::io("cannot delete old checkpoint", &dir))?;
            }
        }
        Ok(kept)
    }
}

/// Writes the files of one checkpoint, then its manifest.
pub struct CheckpointWriter {
    id: u64,
    dir: PathBuf,
    files: Vec<ManifestFile>,
    store: CheckpointStore,
}

impl CheckpointWriter {
    /// Writes and fsyncs one state file.
    pub fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let mut f = File::create(&path).map_err(StateError::io("cannot create", &path))?;
        f.write_all(bytes).map_err(StateError::io("cannot write", &path))?;
        f.sync_all().map_err(StateError::io("cannot fsync", &path))?;
        self.files.push(ManifestFile {
            name: name.to_string(),
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(bytes),
        });
        Ok(())
    }

    /// Takes a state file a task wrote (`CheckpointStore::state_file`) into the checkpoint: checks
    /// that its size is what the task reported, and fsyncs it.
    pub fn adopt(&mut self, file: ManifestFile) -> Result<()> {
        let path = self.dir.join(&file.name);
        let f = File::open(&path).map_err(StateError::io("cannot open", &path))?;
        let size = f.metadata().map_err(StateError::io("cannot read the size of", &path))?.len();
        if size != file.size {
            return Err(StateError::Damaged { path, reason: format!("{size} bytes, but {} were written", file.size) });
        }
        f.sync_all().map_err(StateError::io("cannot fsync", &path))?;
        self.files.push(file);
        Ok(())
    }

    /// Makes the checkpoint complete: writes the parity of its files, then the manifest
    /// (atomically), prunes old checkpoints, and records the checkpoint in the completion record
    /// with a copy of its manifest. Once this returns, sinks may commit its output.
    pub fn commit(self, meta: serde_json::Value) -> Result<()> {
        let started = std::time::Instant::now();
        let parity = if self.store.parity { write_parity(&self.dir, &self.files)? } else { None };
        if let Some(p) = &parity {
            tracing::debug!(
                "checkpoint {}: parity of {} state file(s), {} bytes in all, written ({} bytes) in {:?}",
                self.id,
                self.files.len(),
                self.files.iter().map(|f| f.size).sum::<u64>(),
                p.size,
                started.elapsed()
            );
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            checkpoint_id: self.id,
            created_ms: keel_types::time::now_ms(),
            files: self.files,
            meta,
            parity,
        };
        write_json_atomic(&self.dir.join(MANIFEST), &manifest)?;
        let kept = self.store.prune(self.id)?;
        keel_types::faults::hit("checkpoint.before-record");
        let (previous, problems) = self.store.completion_record()?;
        for p in problems {
            tracing::warn!("completion record: {p}; it is rewritten with this checkpoint");
        }
        let mut manifests = vec![manifest];
        if let Some(prev) = &previous {
            manifests.extend(
                prev.manifests
                    .iter()
                    .filter(|m| m.checkpoint_id != self.id && kept.contains(&m.checkpoint_id))
                    .cloned(),
            );
        }
        let record = CompletionRecord {
            sequence: previous.as_ref().map_or(1, |r| r.sequence + 1),
            committed: self.id,
            max_id: previous.as_ref().map_or(self.id, |r| r.max_id.max(self.id)),
            manifests,
        };
        self.store.write_record(&record)
    }
}

/// A complete, verified checkpoint.
#[derive(Debug, Clone)]
pub struct CompletedCheckpoint {
    pub id: u64,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl CompletedCheckpoint {
    /// Names of the state files in this checkpoint (not the parity).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.manifest.files.iter().map(|f| f.name.as_str())
    }

    /// Reads one state file (verified against the manifest when the checkpoint was opened).
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        fs::read(&path).map_err(StateError::io("cannot read", &path))
    }
}

/// Writes JSON (with its checksum, `keel_types::checked_json`) through a temporary file, fsync,
/// rename and directory fsync.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = keel_types::checked_json::to_vec(value).map_err(StateError::Encode)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp).map_err(StateError::io("cannot create", &tmp))?;
    f.write_all(&bytes).map_err(StateError::io("cannot write", &tmp))?;
    f.sync_all().map_err(StateError::io("cannot fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(StateError::io("cannot rename into place", path))?;
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent).and_then(|d| d.sync_all()).map_err(StateError::io("cannot fsync directory", parent))
}

/// Reads a JSON file written by `write_json_atomic` (its checksum verified; a file without one,
/// from Keel 0.1, is read as it is); `None` if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => keel_types::checked_json::from_slice(&bytes)
            .map(Some)
            .map_err(|reason| StateError::Damaged { path: path.to_path_buf(), reason }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io("cannot read", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(store: &CheckpointStore, id: u64, payload: &[u8]) {
        let mut w = store.writer(id).unwrap();
        w.put("a", payload).unwrap();
        w.commit(serde_json::json!({"run": 1})).unwrap();
    }

    #[test]
    fn a_checkpoint_without_manifest_is_not_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        write(&store, 1, b"one");
        let mut w = store.writer(2).unwrap();
        w.put("a", b"two").unwrap();
        drop(w); // crashed before the manifest
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(latest.id, 1);
        assert_eq!(latest.read("a").unwrap(), b"one");
    }

    #[test]
    fn a_state_file_written_by_a_task_is_adopted_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        let mut w = store.writer(1).unwrap();
        let mut f = store.state_file(1, "a");
        f.write_all(b"he").unwrap();
        f.write_all(b"llo").unwrap();
        assert!(store.state_file(1, "unused").finish().unwrap().is_none(), "nothing written, no file");
        let file = f.finish().unwrap().unwrap();
        let mut short = file.clone();
        short.size += 1;
        let err = w.adopt(short).unwrap_err().to_string();
        assert!(err.contains("6 were written"), "{err}");
        let missing = ManifestFile { name: "never-written".into(), size: 1, crc32c: 0 };
        let err = w.adopt(missing).unwrap_err().to_string();
        assert!(err.contains("cannot open") && err.contains("never-written"), "{err}");
        w.adopt(file).unwrap();
        w.commit(serde_json::json!({})).unwrap();
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(latest.read("a").unwrap(), b"hello");
        assert_eq!(latest.manifest.files.len(), 1);
        assert_eq!(latest.manifest.files[0].crc32c, crc32c::crc32c(b"hello"));
        // A flipped byte is found by the checksum (and, the only damaged file, rebuilt).
        fs::write(dir.path().join(chk_dir_name(1)).join("a"), b"hellO").unwrap();
        assert_eq!(store.latest().unwrap().unwrap().read("a").unwrap(), b"hello");
    }

    #[test]
    fn an_expired_checkpoint_is_discarded_but_never_a_complete_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        write(&store, 1, b"one");
        let mut w = store.writer(2).unwrap();
        w.put("a", b"partial").unwrap();
        drop(w);
        store.discard_incomplete(2).unwrap();
        store.discard_incomplete(1).unwrap();
        store.discard_incomplete(7).unwrap();
        assert_eq!(store.ids().unwrap(), vec![1]);
    }

    #[test]
    fn only_retained_checkpoints_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        store.writer(1).unwrap(); // incomplete, older than the next complete one
        for id in 2..=6 {
            write(&store, id, b"x");
        }
        assert_eq!(store.ids().unwrap(), vec![5, 6]);
    }

    #[test]
    fn json_written_atomically_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.json");
        assert_eq!(read_json::<serde_json::Value>(&p).unwrap(), None);
        write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(read_json::<serde_json::Value>(&p).unwrap(), Some(serde_json::json!({"a": 1})));
        assert!(!p.with_extension("json.tmp").exists());
    }
}
