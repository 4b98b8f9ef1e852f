//! The log's error type: every failure names the topic, partition or file involved.

use keel_types::ErrorClass;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic '{0}' does not exist; create it with `keel topic create {0}`")]
    TopicNotFound(String),
    #[error("topic '{0}' already exists; use it as it is, or delete it first with `keel topic delete {0}`")]
    TopicExists(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid topic configuration: {0}")]
    InvalidConfig(String),
    #[error("partition {partition} does not exist: topic '{topic}' has {partitions} partition(s)")]
    NoSuchPartition { topic: String, partition: u32, partitions: u32 },
    #[error(
        "offset {requested} of topic '{topic}' partition {partition} is no longer stored \
         (retention removed it); the earliest stored offset is {earliest}"
    )]
    OffsetOutOfRange { topic: String, partition: u32, requested: u64, earliest: u64 },
    #[error(
        "corrupt log data in {} at byte {position}: {reason}; this segment cannot be served \
         (restore the file from a backup, or delete the topic to start over)", path.display()
    )]
    Corrupt { path: PathBuf, position: u64, reason: String },
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("topic metadata {} is unreadable: {reason}", path.display())]
    BadMetadata { path: PathBuf, reason: String },
}

impl LogError {
    pub fn class(&self) -> ErrorClass {
        match self {
            LogError::TopicNotFound(_)
            | LogError::TopicExists(_)
            | LogError::InvalidName { .. }
            | LogError::InvalidConfig(_)
            | LogError::NoSuchPartition { .. }
            | LogError::OffsetOutOfRange { .. } => ErrorClass::User,
            LogError::Io { .. } | LogError::Corrupt { .. } | LogError::BadMetadata { .. } => ErrorClass::External,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { action, path, source }
    }
}
