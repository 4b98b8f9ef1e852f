//! Exclusive ownership of a resource (a job, a topic's metadata) by one process, through an
//! advisory lock on a file (`flock`), held for as long as the `OwnerLock` lives.
//!
//! Invariants: at most one `OwnerLock` on a path exists across all processes on the machine; the
//! operating system releases it when the holding process exits in any way, SIGKILL included, so
//! a crash never leaves a stale lock behind. The lock file holds a line describing the holder
//! (process id, command, start time), written after the lock is taken, so a refused second
//! owner can name who holds it. The file itself is never deleted: deleting a locked file would
//! let a second process lock a new file at the same path.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it; `holder` is what that process wrote about itself.
    #[error("held by {holder}")]
    Held { holder: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// An exclusive lock on a file, released on drop (or by the OS when the process dies).
#[derive(Debug)]
pub struct OwnerLock {
    file: File,
    path: PathBuf,
}

impl OwnerLock {
    /// Takes the lock at `path` (creating the file) without waiting; `what` describes the
    /// holder's purpose for whoever is refused (for example "keel run totals.sql").
    pub fn try_acquire(path: &Path, what: &str) -> Result<OwnerLock, LockError> {
        let io = |source| LockError::Io { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder may still be writing its line; an empty one still refuses.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    holder: if holder.is_empty() { "another process".to_string() } else { holder.to_string() },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let line = format!(
            "process {} ({what}), since {}\n",
            std::process::id(),
            crate::time::format_timestamp_ms(crate::time::now_ms())
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(line.as_bytes()))
            .map_err(io)?;
        Ok(OwnerLock { file, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // The description goes with the lock; the file stays (see the module's invariants).
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_naming_the_first_and_a_released_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.lock");
        let first = OwnerLock::try_acquire(&path, "keel run a.sql").unwrap();
        match OwnerLock::try_acquire(&path, "keel run b.sql") {
            Err(LockError::Held { holder }) => {
                assert!(holder.contains(&format!("process {}", std::process::id())), "{holder}");
                assert!(holder.contains("keel run a.sql"), "{holder}");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = OwnerLock::try_acquire(&path, "keel run b.sql").unwrap();
        assert_eq!(again.path(), path);
    }
}
