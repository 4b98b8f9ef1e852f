//! Error classification shared by every crate's error enum.
//!
//! Each library crate has its own `thiserror` enum; each variant answers `class()` with one of
//! these, so the CLI and the restart strategy can tell a user's mistake (do not retry, explain)
//! from an external system's failure (retry with backoff) from a bug in Keel (report it) from
//! data found damaged on disk (do not retry, keep the data, say how to repair it).

/// Who is responsible for an error, which decides what Keel does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The input, configuration or SQL is wrong; retrying will not help. The message says what to change.
    User,
    /// Something outside Keel failed (disk, file system, a remote service); retrying may help.
    External,
    /// An invariant inside Keel was violated: a bug. The message says which invariant.
    Internal,
    /// Data Keel wrote and fsynced was found damaged (a flipped byte, a truncated file): the disk
    /// or an operator changed it. Retrying reads the same damage, so it is not retried; nothing
    /// is deleted, and the message names the file, the position and the repair.
    Damaged,
}

impl ErrorClass {
    /// Whether restarting a job can help: not for a user error nor for damaged data (the same
    /// input or the same bytes fail the same way); an external failure may pass, and a bug may
    /// depend on timing.
    pub fn restart_can_help(self) -> bool {
        !matches!(self, ErrorClass::User | ErrorClass::Damaged)
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::User => "user error",
            ErrorClass::External => "external failure",
            ErrorClass::Internal => "internal error (a bug in Keel)",
            ErrorClass::Damaged => "damaged data",
        })
    }
}
