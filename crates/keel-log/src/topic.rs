//! Topics: creation, lookup, listing, deletion and description.
//!
//! Invariants: a topic directory appears under `topics/` only complete (built under a temporary
//! name, fsynced, then renamed); its `topic.json` never changes after creation and is checked
//! when opened (a hand-edited one with impossible values is refused, not used); deletion and
//! repair hold the topic's admin lock (`.admin.lock`, one process at a time, refused while
//! another holds it); deletion first renames the directory away, so a half-deleted topic is
//! never visible under its name.

use crate::format::{DEFAULT_MAX_MESSAGE_BYTES, MAX_RECORD_BYTES};
use crate::reader::PartitionReader;
use crate::segment::{list_segments, verified_end};
use crate::writer::{Durability, PartitionWriter};
use crate::{LogError, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

fn default_segment_bytes() -> u64 {
    64 << 20
}

/// Topics created before the limit existed accepted records of any size the frame allowed.
fn legacy_max_message_bytes() -> u64 {
    MAX_RECORD_BYTES
}

/// The largest segment size a topic can be created with: a writer reads the last segment whole
/// when it opens the partition, so this bounds that memory.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// The most partitions a topic can have.
pub const MAX_PARTITIONS: u32 = 4096;

/// A topic's configuration, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub partitions: u32,
    /// A segment is closed and a new one started once it holds this many bytes.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Closed segments are deleted, oldest first, while the partition holds more than this.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// Closed segments whose last write is older than this are deleted.
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// The largest record (key plus value bytes) the topic accepts, as Kafka's
    /// `max.message.bytes`; a larger one is refused with nothing written.
    #[serde(default = "legacy_max_message_bytes")]
    pub max_message_bytes: u64,
}

impl TopicConfig {
    pub fn new(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            segment_bytes: default_segment_bytes(),
            retention_bytes: None,
            retention_ms: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// Checks a configuration for a new topic.
    fn validate(&self) -> Result<()> {
        self.check().map_err(LogError::InvalidConfig)?;
        if self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(LogError::InvalidConfig(format!(
                "segment size {} bytes is above the {MAX_SEGMENT_BYTES}-byte maximum",
                self.segment_bytes
            )));
        }
        Ok(())
    }

    /// What any topic's configuration must satisfy, new or found on disk.
    fn check(&self) -> std::result::Result<(), String> {
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(format!("a topic needs between 1 and {MAX_PARTITIONS} partitions, not {}", self.partitions));
        }
        if self.segment_bytes < 1024 {
            return Err(format!("segment size {} bytes is below the 1024-byte minimum", self.segment_bytes));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > MAX_RECORD_BYTES {
            return Err(format!(
                "max-message-bytes {} is not between 1 and {MAX_RECORD_BYTES}",
                self.max_message_bytes
            ));
        }
        Ok(())
    }
}

/// Checks a topic name: 1–200 characters of letters, digits, `.`, `_` and `-`, not starting with `.`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(LogError::InvalidName { name: name.to_string(), reason: reason.to_string() });
    if name.is_empty() || name.len() > 200 {
        return bad("use between 1 and 200 characters");
    }
    if name.starts_with('.') {
        return bad("a topic name cannot start with '.'");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return bad(&format!("'{c}' is not allowed; use letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// What `describe` reports of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// The earliest offset still stored.
    pub start_offset: u64,
    /// One past the last committed record.
    pub end_offset: u64,
    pub size_bytes: u64,
    pub segments: usize,
}

/// The set of topics under one data directory.
#[derive(Debug, Clone)]
pub struct Log {
    topics_dir: PathBuf,
}

impl Log {
    /// Opens (creating if needed) the topics directory under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Log> {
        let topics_dir = data_dir.join("topics");
        fs::create_dir_all(&topics_dir).map_err(LogError::io("cannot create the topics directory", &topics_dir))?;
        Ok(Log { topics_dir })
    }

    /// Creates a topic; fails with `TopicExists` if it is already there.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        validate_topic_name(name)?;
        config.validate()?;
        let dir = self.topics_dir.join(name);
        if dir.exists() {
            return Err(LogError::TopicExists(name.to_string()));
        }
        static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.topics_dir.join(format!(".creating-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(LogError::io("cannot create", &tmp))?;
        for p in 0..config.partitions {
            let pdir = tmp.join(partition_dir_name(p));
            fs::create_dir(&pdir).map_err(LogError::io("cannot create", &pdir))?;
        }
        let meta = tmp.join("topic.json");
        let json = keel_types::checked_json::to_vec(&config).map_err(LogError::InvalidConfig)?;
        crate::segment::write_file_synced(&meta, &json)?;
        crate::segment::sync_dir(&tmp)?;
        match fs::rename(&tmp, &dir) {
            Ok(()) => {}
            Err(_) if dir.exists() => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(LogError::TopicExists(name.to_string()));
            }
            Err(e) => return Err(LogError::io("cannot create", &dir)(e)),
        }
        crate::segment::sync_dir(&self.topics_dir)?;
        Ok(Topic { name: name.to_string(), dir, config })
    }

    /// Opens an existing topic.
    pub fn topic(&self, name: &str) -> Result<Topic> {
        validate_topic_name(name)?;
        let dir = self.topics_dir.join(name);
        let meta = dir.join("topic.json");
        let bytes = match fs::read(&meta) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LogError::TopicNotFound(name.to_string()));
            }
            Err(e) => return Err(LogError::io("cannot read", &meta)(e)),
        };
        let config: TopicConfig = keel_types::checked_json::from_slice(&bytes)
            .map_err(|reason| LogError::BadMetadata { path: meta.clone(), reason })?;
        config.check().map_err(|reason| LogError::BadMetadata { path: meta.clone(), reason })?;
        Ok(Topic { name: name.to_string(), dir, config })
    }

    /// Opens a topic, creating it with `config` if it does not exist.
    pub fn topic_or_create(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        match self.topic(name) {
            Err(LogError::TopicNotFound(_)) => match self.create_topic(name, config) {
                Err(LogError::TopicExists(_)) => self.topic(name),
                other => other,
            },
            other => other,
        }
    }

    /// Names of all topics, sorted.
    pub fn list_topics(&self) -> Result<Vec<String>> {
        let mut names = vec![];
        let entries = fs::read_dir(&self.topics_dir).map_err(LogError::io("cannot list", &self.topics_dir))?;
        for entry in entries {
            let entry = entry.map_err(LogError::io("cannot list", &self.topics_dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with('.') && entry.path().join("topic.json").exists() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes a topic and all its data. Refused while another process deletes or repairs it;
    /// appends in progress finish first (each partition's append lock is taken).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let topic = self.topic(name)?;
        let _admin = topic.admin_lock("keel topic delete")?;
        let mut appends = vec![];
        for p in 0..topic.partitions() {
            appends.push(topic.writer(p, Durability::Fsync)?.hold_lock()?);
        }
        let trash = self.topics_dir.join(format!(".deleting-{name}-{}", std::process::id()));
        fs::rename(&topic.dir, &trash).map_err(LogError::io("cannot delete", &topic.dir))?;
        crate::segment::sync_dir(&self.topics_dir)?;
        fs::remove_dir_all(&trash).map_err(LogError::io("cannot remove", &trash))
    }
}

pub(crate) fn partition_dir_name(p: u32) -> String {
    format!("p-{p:04}")
}

/// One topic: its configuration and access to its partitions.
#[derive(Debug, Clone)]
pub struct Topic {
    name: String,
    dir: PathBuf,
    config: TopicConfig,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }
    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    fn partition_dir(&self, partition: u32) -> Result<PathBuf> {
        if partition >= self.config.partitions {
            return Err(LogError::NoSuchPartition {
                topic: self.name.clone(),
                partition,
                partitions: self.config.partitions,
            });
        }
        Ok(self.dir.join(partition_dir_name(partition)))
    }

    /// A writer for one partition. Writers in any number of processes may coexist; each append
    /// takes the partition's lock.
    pub fn writer(&self, partition: u32, durability: Durability) -> Result<PartitionWriter> {
        let dir = self.partition_dir(partition)?;
        PartitionWriter::open(self.name.clone(), partition, dir, self.config.clone(), durability)
    }

    /// A reader of committed records starting at offset `from`.
    pub fn reader(&self, partition: u32, from: u64) -> Result<PartitionReader> {
        let dir = self.partition_dir(partition)?;
        PartitionReader::open(self.name.clone(), partition, dir, from)
    }

    /// Offsets and sizes of one partition. `end_offset` counts committed records only.
    pub fn partition_info(&self, partition: u32) -> Result<PartitionInfo> {
        let dir = self.partition_dir(partition)?;
        let segments = list_segments(&dir)?;
        let mut size_bytes = 0;
        for (_, path) in &segments {
            size_bytes += fs::metadata(path).map_err(LogError::io("cannot stat", path))?.len();
        }
        let (start_offset, end_offset) = match (segments.first(), segments.last()) {
            (Some((first, _)), Some((last, path))) => (*first, verified_end(path, *last)?),
            _ => (0, 0),
        };
        Ok(PartitionInfo { partition, start_offset, end_offset, size_bytes, segments: segments.len() })
    }

    /// Takes the topic's admin lock for `what` (a command, for whoever is refused).
    pub fn admin_lock(&self, what: &str) -> Result<keel_types::lock::OwnerLock> {
        let path = self.dir.join(".admin.lock");
        keel_types::lock::OwnerLock::try_acquire(&path, what).map_err(|e| match e {
            keel_types::lock::LockError::Held { holder } => {
                LogError::Locked { what: format!("topic '{}'", self.name), holder }
            }
            keel_types::lock::LockError::Io { path, source } => LogError::Io { action: "cannot lock", path, source },
        })
    }

    /// The directory of one partition.
    pub(crate) fn partition_path(&self, partition: u32) -> Result<PathBuf> {
        self.partition_dir(partition)
    }

    /// `partition_info` for every partition.
    pub fn describe(&self) -> Result<Vec<PartitionInfo>> {
        (0..self.config.partitions).map(|p| self.partition_info(p)).collect()
    }
}
