//! Keel as a library: the Rust API for building and running the same pipelines the SQL front
//! end runs, with the same checkpointing, recovery and exactly-once sinks.
//!
//! The pieces, by layer: [`types`] (time, keys, windows), [`log`] (embedded topics), [`state`]
//! (checkpoint storage), [`runtime`] (tasks, checkpoints, operators), [`connectors`] (topic,
//! filesystem and print connectors), [`sql`] (Flink SQL). [`api`] ties them into a builder;
//! see `examples/windowed_totals.rs`.

pub mod api;
#[doc(hidden)]
pub mod fuzzing;
pub mod sample;

pub use keel_connectors as connectors;
pub use keel_log as log;
pub use keel_runtime as runtime;
pub use keel_sql as sql;
pub use keel_state as state;
pub use keel_types as types;
