//! The runtime's error type. Operators and connectors report failures through it; the job's
//! restart strategy looks at `class()` to decide whether restarting can help.

use keel_types::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The job's input or configuration is wrong in a way restarting will not fix.
    #[error("{0}")]
    User(String),
    /// An external system (disk, file, service) failed; restarting may help.
    #[error("{0}")]
    External(String),
    /// An invariant inside Keel was violated.
    #[error("internal error: {0}")]
    Internal(String),
    /// Data Keel wrote was found damaged on disk; restarting reads the same damage.
    #[error("{0}")]
    Damaged(String),
    /// A task panicked.
    #[error("task '{task}' panicked: {message}")]
    Panic { task: String, message: String },
    /// The task was stopped because another part of the job failed or the job is stopping.
    #[error("cancelled: {0}")]
    Cancelled(String),
    #[error(transparent)]
    State(#[from] keel_state::StateError),
    #[error("expression evaluation failed in {context}: {source}")]
    Expr { context: String, source: datafusion::error::DataFusionError },
    #[error("Arrow error in {context}: {source}")]
    Arrow { context: String, source: arrow::error::ArrowError },
}

impl RuntimeError {
    pub fn class(&self) -> ErrorClass {
        match self {
            RuntimeError::User(_) => ErrorClass::User,
            RuntimeError::External(_) | RuntimeError::Cancelled(_) => ErrorClass::External,
            RuntimeError::State(e) => e.class(),
            RuntimeError::Internal(_) | RuntimeError::Panic { .. } => ErrorClass::Internal,
            RuntimeError::Damaged(_) => ErrorClass::Damaged,
            // Expression errors come from data (division by zero, bad casts): user errors.
            RuntimeError::Expr { .. } => ErrorClass::User,
            RuntimeError::Arrow { .. } => ErrorClass::Internal,
        }
    }

    pub fn arrow(context: impl Into<String>) -> impl FnOnce(arrow::error::ArrowError) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Arrow { context, source }
    }

    pub fn expr(context: impl Into<String>) -> impl FnOnce(datafusion::error::DataFusionError) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Expr { context, source }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
