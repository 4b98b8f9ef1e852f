//! The connectors' error type: configuration mistakes name the option and the accepted values;
//! I/O failures name the file or topic.

use keel_runtime::RuntimeError;
use keel_types::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Log(#[from] keel_log::LogError),
    #[error("{action} {path}: {source}")]
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

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
