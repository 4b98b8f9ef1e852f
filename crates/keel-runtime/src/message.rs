//! What travels between tasks (data and in-band control on the same edges), what the
//! coordinator tells tasks, and what tasks tell the coordinator.
//!
//! Invariants: on every edge, a barrier `n` follows all data sent before checkpoint `n` was taken
//! at the source and precedes all data after it; watermarks on one edge never decrease; `End` is
//! the last message on an edge.

use crate::error::RuntimeError;
use arrow::array::RecordBatch;

/// A message on a data edge.
#[derive(Debug, Clone)]
pub enum Message {
    Data(RecordBatch),
    /// No event with a smaller event time will follow on this edge (except late ones).
    Watermark(i64),
    /// The sender has no data for now: leave it out of the watermark minimum until it speaks.
    Idle,
    /// Checkpoint barrier.
    Barrier(u64),
    /// No more messages on this edge.
    End,
}

/// What the coordinator tells a task.
#[derive(Debug, Clone)]
pub enum Control {
    /// Sources: take checkpoint `n` now and emit its barrier.
    Trigger(u64),
    /// Sources: emit checkpoint `checkpoint` as the last one, then end. With `drain`, first emit
    /// the maximum watermark so that every window fires (end of bounded input).
    Finish { checkpoint: u64, drain: bool },
    /// Checkpoint `n` is durable: commit what was pre-committed up to it.
    CheckpointComplete(u64),
    /// Everything is done: exit.
    Shutdown,
}

/// What a task tells the coordinator.
#[derive(Debug)]
pub enum Event {
    /// The task's operators wrote their state files into the checkpoint's directory (not yet
    /// fsynced): what the manifest is to record of them.
    Ack {
        task: usize,
        checkpoint: u64,
        files: Vec<keel_state::ManifestFile>,
    },
    SourceExhausted {
        task: usize,
    },
    TaskEnded {
        task: usize,
    },
    TaskFailed {
        task: usize,
        error: RuntimeError,
    },
}
