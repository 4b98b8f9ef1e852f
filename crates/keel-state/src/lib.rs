//! Keel's checkpoint storage: where a job's checkpoints and its job file live on disk, how a
//! checkpoint becomes complete atomically, which checkpoint recovery uses, and how operator
//! state is encoded (Arrow IPC for tables of keyed state).
//!
//! Layout: `jobs/NAME/job.json` (the job's identity: run id, pipeline fingerprint, bounded end
//! offsets), `jobs/NAME/checkpoints/chk-N/` holding one file per operator subtask, `_parity`
//! and `_manifest.json`, and `jobs/NAME/checkpoints/_completed.{0,1}` (the completion record).
//!
//! Invariants:
//! - A checkpoint is complete exactly when its `_manifest.json` exists. The manifest is written
//!   last: state files are written (by the tasks, `StateFileWriter`) and fsynced (by the
//!   coordinator, `CheckpointWriter::adopt`), their parity is written and fsynced, then the
//!   manifest goes to a temporary file that is fsynced, renamed into place, and the directory
//!   fsynced. Then the completion record (two alternating CRC-framed slots) names it, with a
//!   copy of its manifest, before any sink is told to commit its output.
//! - The manifest records each state file's size and CRC32C; recovery (`recovery.rs`) uses the
//!   newest checkpoint whose manifest (or its copy) is intact and whose files all match, after
//!   rebuilding one damaged state file from the parity; it never goes back past the completion
//!   record's committed checkpoint without the operator's choice (that would repeat output).
//! - Only the newest `retained` complete checkpoints are kept; older ones, and incomplete ones
//!   older than the newest complete one, are deleted after a new checkpoint completes.

mod codec;
mod error;
mod parity;
mod record;
mod recovery;
mod state_file;
mod store;

pub use codec::{batch_from_ipc, batch_to_ipc, batches_from_ipc, write_batches};
pub use error::StateError;
pub use record::CompletionRecord;
pub use recovery::{Choice, Recovery};
pub use state_file::{Counted, StateFileWriter, StateOut};
pub use store::{
    CheckpointStore, CheckpointWriter, CompletedCheckpoint, Manifest, ManifestFile, read_json, write_json_atomic,
};

pub type Result<T, E = StateError> = std::result::Result<T, E>;
