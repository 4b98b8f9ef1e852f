//! Keel's connectors: the topic source (JSON records from Keel's embedded log, with dead
//! letters), the exactly-once topic and filesystem sinks (optionally partitioned into Hive-style
//! directories), the at-least-once print sink, and the JSON format.
//!
//! Guarantees by connector: topic source → replayable (positions in checkpoints); topic sink and
//! upsert topic sink → exactly-once (two-phase commit through staged transactions); filesystem
//! sink → exactly-once (files published on checkpoint completion); print sink → at-least-once.
//! Updating results (changelogs) are written by the debezium-json format, the upsert topic sink,
//! and the print and blackhole sinks (`changelog_format`).

pub mod changelog_format;
mod csv_rows;
pub mod datagen;
pub mod dead_letter;
pub mod error;
pub mod file_source;
pub mod json;
pub mod nexmark;
pub mod numbers;
pub mod partitioned;
pub mod sinks;
mod splits;
mod stage_file;
pub mod staging;
pub mod topic_source;
pub mod upsert;

pub use error::ConnectorError;
pub use partitioned::Partitioning;
pub use sinks::{BlackholeSink, FileFormat, FileSink, PrintSink, TopicFormat, TopicSink};
pub use topic_source::{BadRecordPolicy, TopicSource, TopicSourceConfig};
pub use upsert::UpsertTopicSink;
