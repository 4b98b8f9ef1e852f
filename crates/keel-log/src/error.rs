//! The log's error type: every failure names the topic, partition or file involved, and damage
//! says what was kept and how to repair it.

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
        "a record of {size} bytes is larger than topic '{topic}' accepts ({limit} bytes, its \
         max-message-bytes); nothing of this write was stored. Make the record smaller, or write it to \
         a topic created with a larger `keel topic create --max-message-bytes` (at most {max})",
        max = crate::format::MAX_RECORD_BYTES
    )]
    RecordTooLarge { topic: String, size: u64, limit: u64 },
    #[error(
        "topic '{topic}' partition {partition} is damaged: {reason} at byte {position} of {}{}; nothing \
         was truncated or deleted. Reads stop and appends are refused at offset {offset} until it is \
         repaired: run `keel topic repair {topic} --partition {partition}` (it moves the damaged bytes \
         aside and says exactly which offsets are lost), or restore the file from a backup",
        path.display(),
        match resume { Some((pos, off)) => format!(", and valid data follows from byte {pos} (offset {off})"), None => String::new() }
    )]
    Damaged {
        topic: String,
        partition: u32,
        path: PathBuf,
        position: u64,
        reason: String,
        /// The first offset that cannot be read.
        offset: u64,
        /// Where valid data resumes: `(position, offset)`.
        resume: Option<(u64, u64)>,
    },
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "topic metadata {} is unreadable: {reason}; restore it from a backup (`keel topic repair` \
         rebuilds a partition's producers.json from its segments)",
        path.display()
    )]
    BadMetadata { path: PathBuf, reason: String },
    #[error("{what} is in use by another process ({holder}); wait for it to finish, or stop it first")]
    Locked { what: String, holder: String },
    #[error(
        "topic '{topic}' was deleted (and maybe created again) while partition {partition} was open for \
         writing; nothing was written. Open the topic again (a job does so when it restarts)"
    )]
    Deleted { topic: String, partition: u32 },
}

impl LogError {
    pub fn class(&self) -> ErrorClass {
        match self {
            LogError::TopicNotFound(_)
            | LogError::TopicExists(_)
            | LogError::InvalidName { .. }
            | LogError::InvalidConfig(_)
            | LogError::NoSuchPartition { .. }
            | LogError::OffsetOutOfRange { .. }
            | LogError::RecordTooLarge { .. }
            | LogError::Locked { .. } => ErrorClass::User,
            LogError::Io { .. } | LogError::Deleted { .. } => ErrorClass::External,
            LogError::Damaged { .. } | LogError::BadMetadata { .. } => ErrorClass::Damaged,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { action, path, source }
    }
}
