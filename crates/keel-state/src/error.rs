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
}

impl StateError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StateError::Io { .. } | StateError::Damaged { .. } => ErrorClass::External,
            StateError::Encode(_) | StateError::Decode { .. } => ErrorClass::Internal,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.into();
        move |source| StateError::Io { action, path, source }
    }
}
