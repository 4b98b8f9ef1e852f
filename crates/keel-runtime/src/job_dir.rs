//! A job's directory (`DATA_DIR/jobs/NAME`) and identity on disk: its name, its owner, its
//! `job.json` (run id, pipeline fingerprint, first-start facts of its sources).
//!
//! Invariants:
//! - a job name becomes a path only after `validate_job_name` accepted it (letters, digits,
//!   `.`, `_`, `-`; not starting with `.`; at most `MAX_JOB_NAME` characters), so no name leaves
//!   `DATA_DIR/jobs/` or names the directory itself;
//! - a job has one owner: `JobDir::open` takes the exclusive lock `jobs/NAME/.lock` before it
//!   reads or changes anything, and it is held until the `JobDir` (every clone) is dropped; the
//!   operating system releases it when the process dies. A second start is refused naming the
//!   holder. `--fresh` deletes everything in the directory but the lock file, under the lock;
//! - `job.json` is written before the first task starts and only replaced by `--fresh`; it is
//!   written twice, `job.copy.json` first, so a missing or damaged `job.json` is restored from
//!   the copy rather than replaced by a new identity (a new run id would rename the sinks'
//!   transactions and commit staged output twice); a job that has checkpoints but no readable
//!   identity is refused.

use crate::error::{Result, RuntimeError};
use keel_state::{CheckpointStore, StateError, read_json, write_json_atomic};
use keel_types::lock::{LockError, OwnerLock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The longest job name (it also names the job's dead-letter topic, `NAME-dead-letter`).
pub const MAX_JOB_NAME: usize = 150;

/// Checks a job name (see the module's invariants).
pub fn validate_job_name(name: &str) -> Result<()> {
    let bad = |reason: String| {
        Err(RuntimeError::User(format!(
            "invalid job name '{name}': {reason}; a job name has 1 to {MAX_JOB_NAME} letters, digits, '.', '_' \
             and '-', and does not start with '.'"
        )))
    };
    if name.is_empty() {
        return bad("it is empty".into());
    }
    if name.chars().count() > MAX_JOB_NAME {
        return bad(format!("it has {} characters", name.chars().count()));
    }
    if name.starts_with('.') {
        return bad("it starts with '.'".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return bad(format!("'{c}' is not allowed"));
    }
    Ok(())
}

/// A valid job name made from a pipeline file's name: every character a job name cannot hold
/// becomes `_` (`tötals x.sql` gives `t_tals_x`), cut to `MAX_JOB_NAME`.
pub fn job_name_from_file(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(MAX_JOB_NAME)
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    if name.is_empty() { "pipeline".to_string() } else { name }
}

/// The job's identity on disk (`jobs/NAME/job.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobFile {
    pub name: String,
    pub run_id: String,
    pub fingerprint: String,
    pub created_ms: i64,
    /// Facts sources record at the first start (for example bounded end offsets), by source.
    #[serde(default)]
    pub sources: BTreeMap<String, serde_json::Value>,
    /// The pipeline file the job was first started from (`keel run`), to tell two files whose
    /// names give one job name from a pipeline that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

/// A job's directory with its identity loaded, owned by this process.
#[derive(Debug, Clone)]
pub struct JobDir {
    pub dir: PathBuf,
    pub file: JobFile,
    /// True when this start created the job (nothing to resume).
    pub created: bool,
    /// The job's ownership: held while any clone of this `JobDir` lives.
    lock: Arc<OwnerLock>,
}

impl JobDir {
    /// Opens the job's directory as its owner, creating its identity on first start. `fresh`
    /// deletes what a previous run left (checkpoints, staged output, identity) and says so.
    pub fn open(data_dir: &Path, name: &str, fingerprint: &str, fresh: bool) -> Result<JobDir> {
        JobDir::open_for(data_dir, name, fingerprint, fresh, None)
    }

    /// `open` for a pipeline file (`keel run`): recorded at the first start, so that another
    /// file whose name gives the same job name is told so rather than taken for a changed
    /// pipeline (whose advice, `--fresh`, would discard the other job).
    pub fn open_for(
        data_dir: &Path,
        name: &str,
        fingerprint: &str,
        fresh: bool,
        pipeline: Option<&Path>,
    ) -> Result<JobDir> {
        let pipeline =
            pipeline.map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string());
        validate_job_name(name)?;
        let dir = data_dir.join("jobs").join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| RuntimeError::External(format!("cannot create job directory {}: {e}", dir.display())))?;
        let lock =
            OwnerLock::try_acquire(&dir.join(".lock"), &format!("running job '{name}'")).map_err(|e| match e {
                LockError::Held { holder } => RuntimeError::User(format!(
                    "job '{name}' is already running in {holder}; one job has one owner: stop that process first, \
                 or give this run another name with --name"
                )),
                LockError::Io { path, source } => {
                    RuntimeError::External(format!("cannot lock job directory {}: {source}", path.display()))
                }
            })?;
        if fresh {
            discard(&dir, name)?;
        }
        let path = dir.join("job.json");
        let found = match read_json::<JobFile>(&path) {
            Ok(found) => found,
            Err(StateError::Damaged { reason, .. }) => {
                Some(restore_identity(&dir, name, &format!("is damaged ({reason})"))?)
            }
            Err(e) => return Err(e.into()),
        };
        let found = match found {
            Some(f) => Some(f),
            None if has_checkpoints(&dir)? => Some(restore_identity(&dir, name, "is missing")?),
            None => None,
        };
        match found {
            Some(file)
                if file.fingerprint != fingerprint
                    && file.pipeline.is_some()
                    && pipeline.is_some()
                    && file.pipeline != pipeline =>
            {
                Err(RuntimeError::User(format!(
                    "job '{name}' belongs to pipeline file {}, and this is {}: the two file names give the same job \
                     name. Give this one its own with --name (--fresh would discard the other pipeline's job)",
                    file.pipeline.unwrap_or_default(),
                    pipeline.unwrap_or_default()
                )))
            }
            Some(file) if file.fingerprint != fingerprint => Err(RuntimeError::User(format!(
                "the pipeline of job '{name}' changed since its state in {} was written; \
                 restore the original pipeline to resume, or run with --fresh to discard that state and start over",
                dir.display()
            ))),
            Some(file) => Ok(JobDir { dir, file, created: false, lock: Arc::new(lock) }),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let file = JobFile {
                    name: name.to_string(),
                    run_id: format!("{:x}-{:x}", nanos, std::process::id()),
                    fingerprint: fingerprint.to_string(),
                    created_ms: keel_types::time::now_ms(),
                    sources: BTreeMap::new(),
                    pipeline,
                };
                write_identity(&dir, &file)?;
                Ok(JobDir { dir, file, created: true, lock: Arc::new(lock) })
            }
        }
    }

    /// Records a source's first-start fact durably (used before any task starts).
    pub fn set_source_fact(&mut self, source: &str, value: serde_json::Value) -> Result<()> {
        self.file.sources.insert(source.to_string(), value);
        write_identity(&self.dir, &self.file)
    }

    pub fn checkpoint_store(&self, retained: usize) -> Result<CheckpointStore> {
        Ok(CheckpointStore::open(&self.dir.join("checkpoints"), retained)?)
    }

    /// The lock file that makes this process the job's owner.
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }
}

/// `--fresh`: deletes everything in the job's directory except its lock, saying what it discards.
fn discard(dir: &Path, name: &str) -> Result<()> {
    let store = CheckpointStore::open(&dir.join("checkpoints"), usize::MAX)?;
    let ids = store.ids()?;
    let committed = store.completion_record().ok().and_then(|(r, _)| r).map(|r| r.committed);
    let repeats = match committed {
        Some(c) => format!(
            "the output it committed (through checkpoint {c}) stays in its sinks and is written again, since its \
             input is read again from the start"
        ),
        None => "its input is read again from the start".to_string(),
    };
    tracing::warn!(
        "--fresh: discarding job '{name}': {} checkpoint(s){}, its staged uncommitted output and its identity; \
         {repeats}",
        ids.len(),
        ids.last().map(|l| format!(" (newest {l})")).unwrap_or_default()
    );
    let io = |e: std::io::Error| RuntimeError::External(format!("cannot delete in {}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_name() == ".lock" {
            continue;
        }
        let path = entry.path();
        if entry.file_type().map_err(io)?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .map_err(|e| RuntimeError::External(format!("cannot delete {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Writes the job's identity: the copy first, then `job.json` (each atomically).
fn write_identity(dir: &Path, file: &JobFile) -> Result<()> {
    write_json_atomic(&dir.join("job.copy.json"), file)?;
    write_json_atomic(&dir.join("job.json"), file)?;
    Ok(())
}

/// Whether the job has checkpoints (directories or a completion record): it ran before.
fn has_checkpoints(dir: &Path) -> Result<bool> {
    let store = CheckpointStore::open(&dir.join("checkpoints"), usize::MAX)?;
    Ok(!store.ids()?.is_empty() || store.completion_record()?.0.is_some())
}

/// The job's identity from `job.copy.json`, written back to `job.json` (the damaged one kept as
/// `job.json.damaged`); refused when the copy is unreadable too.
fn restore_identity(dir: &Path, name: &str, why: &str) -> Result<JobFile> {
    let path = dir.join("job.json");
    let copy = match read_json::<JobFile>(&dir.join("job.copy.json")) {
        Ok(Some(file)) => file,
        Ok(None) => {
            return Err(identity_lost(&path, name, why, "its copy job.copy.json is missing"));
        }
        Err(e) => return Err(identity_lost(&path, name, why, &format!("its copy is unreadable too ({e})"))),
    };
    if path.exists() {
        let _ = std::fs::rename(&path, dir.join("job.json.damaged"));
    }
    write_json_atomic(&path, &copy)?;
    tracing::warn!("job '{name}': {} {why}; restored from job.copy.json", path.display());
    Ok(copy)
}

fn identity_lost(path: &Path, name: &str, why: &str, copy: &str) -> RuntimeError {
    RuntimeError::Damaged(format!(
        "job '{name}': {} {why}, and {copy}; the job's identity (its run id names its sinks' transactions) \
         cannot be recovered. Restore the file from a backup, or run with --fresh to start the job over (its \
         input is read again and its output written again)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_the_jobs_directory_are_refused() {
        for bad in ["", "../../outside", "/abs/dir", "a/b", ".", "..", ".hidden", "tötals", "a b", &"x".repeat(151)] {
            let err = validate_job_name(bad).unwrap_err();
            assert_eq!(err.class(), keel_types::ErrorClass::User, "{bad}");
            assert!(err.to_string().contains("invalid job name"), "{err}");
        }
        for good in ["totals", "q-5.v2", "A_1", &"x".repeat(150)] {
            validate_job_name(good).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(JobDir::open(dir.path(), "../escape", "f", true).is_err());
        assert!(!dir.path().join("escape").exists() && !dir.path().join("jobs").exists());
    }

    #[test]
    fn a_pipeline_file_name_always_gives_a_valid_job_name() {
        for (file, name) in [
            ("tötals x.sql", "t_tals_x"),
            ("/a/b/.hidden.sql", "_hidden"),
            (".sql", "_sql"),
            ("totals.sql", "totals"),
            ("", "pipeline"),
        ] {
            let got = job_name_from_file(Path::new(file));
            assert_eq!(got, name, "{file}");
            validate_job_name(&got).unwrap();
        }
        validate_job_name(&job_name_from_file(Path::new(&format!("{}.sql", "é".repeat(300))))).unwrap();
    }

    #[test]
    fn a_job_has_one_owner_and_fresh_keeps_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = JobDir::open(dir.path(), "j", "f", false).unwrap();
        let err = JobDir::open(dir.path(), "j", "f", true).unwrap_err();
        assert_eq!(err.class(), keel_types::ErrorClass::User);
        assert!(err.to_string().contains(&format!("process {}", std::process::id())), "{err}");
        assert!(first.dir.join("job.json").exists(), "a refused --fresh deletes nothing");
        let run_id = first.file.run_id.clone();
        drop(first);
        let again = JobDir::open(dir.path(), "j", "f", false).unwrap();
        assert_eq!(again.file.run_id, run_id);
        drop(again);
        let fresh = JobDir::open(dir.path(), "j", "f", true).unwrap();
        assert!(fresh.created && fresh.file.run_id != run_id);
        assert!(fresh.lock_path().exists());
    }

    #[test]
    fn a_missing_or_damaged_identity_is_restored_from_its_copy_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = JobDir::open(dir.path(), "j", "f", false).unwrap();
        job.set_source_fact("src", serde_json::json!({ "end": [5, 7] })).unwrap();
        let store = job.checkpoint_store(3).unwrap();
        let mut w = store.writer(1).unwrap();
        w.put("x", b"state").unwrap();
        w.commit(serde_json::json!({})).unwrap();
        let file = job.file.clone();
        drop(job);
        let path = dir.path().join("jobs/j/job.json");
        std::fs::remove_file(&path).unwrap();
        let again = JobDir::open(dir.path(), "j", "f", false).unwrap();
        assert_eq!(again.file, file);
        assert!(!again.created);
        drop(again);
        // A changed digit of the run id still parses: its checksum refuses it, the copy wins.
        let text = std::fs::read_to_string(&path).unwrap();
        let run_id = &file.run_id;
        let changed = text.replace(run_id.as_str(), &run_id.replacen(|c: char| c.is_ascii_digit(), "x", 1));
        assert_ne!(changed, text);
        std::fs::write(&path, changed).unwrap();
        assert_eq!(JobDir::open(dir.path(), "j", "f", false).unwrap().file, file);
        // Both gone, with checkpoints: refused rather than given a new identity.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(dir.path().join("jobs/j/job.copy.json"), b"{ garbled").unwrap();
        let err = JobDir::open(dir.path(), "j", "f", false).unwrap_err();
        assert_eq!(err.class(), keel_types::ErrorClass::Damaged);
        assert!(err.to_string().contains("cannot be recovered") && err.to_string().contains("--fresh"), "{err}");
        // --fresh starts over.
        assert!(JobDir::open(dir.path(), "j", "f", true).unwrap().created);
    }
}
