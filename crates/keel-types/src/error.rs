//! Error classification shared by every crate's error enum.
//!
//! Each library crate has its own `thiserror` enum; each variant answers `class()` with one of
//! these, so the CLI and the restart strategy can tell a user's mistake (do not retry, explain)
//! from an external system's failure (retry with backoff) from a bug in Keel (report it).

/// Who is responsible for an error, which decides what Keel does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The input, configuration or SQL is wrong; retrying will not help. The message says what to change.
    User,
    /// Something outside Keel failed (disk, file system, a remote service); retrying may help.
    External,
    /// An invariant inside Keel was violated: a bug. The message says which invariant.
    Internal,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::User => "user error",
            ErrorClass::External => "external failure",
            ErrorClass::Internal => "internal error (a bug in Keel)",
        })
    }
}
