//! A guard around third-party decoders fed with untrusted bytes (arrow-json, arrow-csv, the
//! parquet reader, Arrow IPC): a panic inside one (found by fuzzing: arrow-ipc panics on some
//! malformed Arrow schemas, in IPC state and embedded in Parquet files) becomes an error
//! describing it, so a bad record is a bad record and a malformed file a clear error naming it,
//! not a task panic that restarts the job into the same panic.
//!
//! Invariant: only code that decodes input data runs under the guard; Keel's own invariants
//! still panic as they should. What the failed decoder left behind is not used again: callers
//! drop or rebuild it.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`; a panic inside becomes `Err` with the panic's message, prefixed by `what`.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = if let Some(s) = panic.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = panic.downcast_ref::<String>() {
            s.clone()
        } else {
            "no message".to_string()
        };
        format!("{what} failed on this input ({message})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        assert_eq!(no_panic("x", || 3), Ok(3));
        let err = no_panic("the decoder", || -> u8 { panic!("bit width of 0") }).unwrap_err();
        assert_eq!(err, "the decoder failed on this input (bit width of 0)");
    }
}
