//! The connectors' error type: configuration mistakes name the option and the accepted values;
//! I/O failures name the file or topic. An I/O failure that a restart cannot fix (a path that is
//! a file where a directory is wanted, no permission) is a user error, so it is not retried.

use keel_runtime::RuntimeError;
use keel_types::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Log(#[from] keel_log::LogError),
    #[error("{action} {path}: {source}{}", io_hint(action, source))]
    Io { action: &'static str, path: String, source: std::io::Error },
    #[error("{0}")]
    Damaged(String),
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
}

impl ConnectorError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ConnectorError::Config(_) => ErrorClass::User,
            ConnectorError::Log(e) => e.class(),
            ConnectorError::Io { action, source, .. } if io_is_users(action, source) => ErrorClass::User,
            ConnectorError::Io { .. } => ErrorClass::External,
            ConnectorError::Damaged(_) => ErrorClass::Damaged,
            ConnectorError::Encode { .. } => ErrorClass::Internal,
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ConnectorError {
        let path = path.display().to_string();
        move |source| ConnectorError::Io { action, path, source }
    }
}

impl From<ConnectorError> for RuntimeError {
    fn from(e: ConnectorError) -> Self {
        match e.class() {
            ErrorClass::User => RuntimeError::User(e.to_string()),
            ErrorClass::External => RuntimeError::External(e.to_string()),
            ErrorClass::Internal => RuntimeError::Internal(e.to_string()),
            ErrorClass::Damaged => RuntimeError::Damaged(e.to_string()),
        }
    }
}

/// Whether an I/O failure is the configuration's fault, which no restart can fix: a path that is
/// a file where a directory is wanted (or the other way round), a directory to create where a
/// file already is, a place Keel may not write.
fn io_is_users(action: &str, e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotADirectory | IsADirectory | PermissionDenied | ReadOnlyFilesystem => true,
        AlreadyExists => action.contains("directory"),
        _ => false,
    }
}

/// What to do about an I/O failure that is the configuration's fault.
fn io_hint(action: &str, e: &std::io::Error) -> &'static str {
    if io_is_users(action, e) {
        "; check the path in the table's options: it must name a directory Keel may write (or create), not a file"
    } else {
        ""
    }
}

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
