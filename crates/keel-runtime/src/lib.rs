//! Keel's streaming runtime: the job graph, task threads connected by bounded edges, in-band
//! watermarks and checkpoint barriers, the checkpoint coordinator, the restart strategy, and the
//! streaming operators (expression filters and projections, window assignment, window
//! aggregation).
//!
//! Threads, not async tasks: each subtask is one OS thread running a loop over its inputs (as a
//! Flink task runs its mailbox), so an operator's code is plain synchronous Rust and a blocked
//! send on a full edge is the backpressure. Every cross-task interaction is a message on a
//! channel (`Message` on data edges, `Control` and `Event` with the coordinator), the seam a
//! network transport would implement.

pub mod changelog;
pub mod coordinator;
pub mod error;
pub mod exchange;
pub mod graph;
pub mod job;
pub mod job_dir;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod ops;
mod task;
#[cfg(test)]
use keel_types::test_rng;

pub use changelog::RowKind;
pub use coordinator::JobOutcome;
pub use error::{Result, RuntimeError};
pub use exchange::Partitioning;
pub use graph::{JobGraph, OperatorSpec, StageInput, StageSpec};
pub use job::{JobConfig, RestartStrategy, run_job};
pub use job_dir::{JobDir, JobFile, MAX_JOB_NAME, job_name_from_file, validate_job_name};
pub use metrics::Metrics;
pub use operator::{
    Operator, OperatorFactory, RestoredState, SideOutput, SideOutputFactory, Source, SourceFactory, SourcePoll,
    TaskContext, WatermarkStatus,
};
