//! SQL errors. Every error about the pipeline text says where (line and column) and what to do.

use keel_types::ErrorClass;

/// A place in the pipeline text (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text does not parse.
    #[error("{pos}: {message}")]
    Syntax { pos: Pos, message: String },
    /// The text parses but uses something Keel cannot run.
    #[error("{pos}: {construct} is not supported{}", alternative.as_ref().map(|a| format!("; {a}")).unwrap_or_default())]
    Unsupported { pos: Pos, construct: String, alternative: Option<String> },
    /// Names, types or options are wrong.
    #[error("{pos}: {message}")]
    Invalid { pos: Pos, message: String },
    /// An option of the run (not of the SQL text) is wrong, such as the parallelism.
    #[error("{0}")]
    Options(String),
    /// DataFusion refused the query (unknown column, type mismatch, ...).
    #[error("{context}: {message}")]
    Planning { context: String, message: String },
    #[error(transparent)]
    Runtime(#[from] keel_runtime::RuntimeError),
    #[error(transparent)]
    Log(#[from] keel_log::LogError),
}

impl SqlError {
    pub fn class(&self) -> ErrorClass {
        match self {
            SqlError::Runtime(e) => e.class(),
            SqlError::Log(e) => e.class(),
            _ => ErrorClass::User,
        }
    }

    pub(crate) fn syntax(pos: Pos, message: impl Into<String>) -> Self {
        SqlError::Syntax { pos, message: message.into() }
    }

    pub(crate) fn invalid(pos: Pos, message: impl Into<String>) -> Self {
        SqlError::Invalid { pos, message: message.into() }
    }

    pub(crate) fn unsupported(pos: Pos, construct: impl Into<String>, alternative: Option<&str>) -> Self {
        SqlError::Unsupported { pos, construct: construct.into(), alternative: alternative.map(str::to_string) }
    }
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// A DataFusion planning error, placed at the name it complains about when there is one.
pub(crate) fn located(e: datafusion::error::DataFusionError, query: &[crate::script::Tok]) -> SqlError {
    let message = e.strip_backtrace();
    if let Some(type_error) = crate::type_check::coercion_error(&message, query) {
        return type_error;
    }
    let name = ["No field named ", "table '", "Invalid function '"].iter().find_map(|marker| {
        let rest = &message[message.find(marker)? + marker.len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(rest.len());
        Some(rest[..end].trim_matches('.').rsplit('.').next().unwrap_or("").to_string())
    });
    match name.filter(|n| !n.is_empty()).and_then(|n| crate::script::find_keyword(query, &[n.as_str()]).map(|p| (n, p)))
    {
        Some((_, pos)) => SqlError::Invalid { pos, message },
        None => SqlError::Planning { context: "planning the query".into(), message },
    }
}
