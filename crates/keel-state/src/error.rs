//! The state crate's error type.

use keel_types::ErrorClass;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("checkpoint file {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot encode state as Arrow IPC: {0}")]
    Encode(String),
    #[error("cannot decode state from Arrow IPC ({context}): {reason}")]
    Decode { context: String, reason: String },
    #[error(
        "this job's newest checkpoints cannot be restored: {}. Checkpoint {committed} completed and its \
         output was committed to the sinks, so {} would write the output committed since then again \
         (duplicates in the exactly-once sinks). Nothing was changed. Restore the damaged files under {} from \
         a backup and run again; or accept the repeated output: {}",
        damage.join("; "),
        match usable { Some(u) => format!("restoring checkpoint {u}"), None => "starting over".to_string() },
        dir.display(),
        match usable {
            Some(u) => format!("run with --from-checkpoint {u} (or --fresh to start over)"),
            None => "run with --fresh to start over".to_string(),
        }
    )]
    WouldRepeatOutput { dir: PathBuf, committed: u64, usable: Option<u64>, damage: Vec<String> },
    #[error("checkpoint {checkpoint} cannot be restored: {reason}")]
    NotRestorable { checkpoint: u64, reason: String },
}

impl StateError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StateError::Io { .. } => ErrorClass::External,
            StateError::Damaged { .. } | StateError::WouldRepeatOutput { .. } => ErrorClass::Damaged,
            StateError::NotRestorable { .. } => ErrorClass::User,
            StateError::Encode(_) | StateError::Decode { .. } => ErrorClass::Internal,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.into();
        move |source| StateError::Io { action, path, source }
    }
}
