//! Keel's embedded durable log: named topics of partitioned, append-only record streams.
//!
//! Layout under the data directory: `topics/NAME/topic.json` (configuration) and
//! `topics/NAME/p-NNNN/` per partition holding segment files `OFFSET.log` (named by the offset of
//! their first record), `producers.json` (the last committed sequence of each transactional
//! producer) and `.lock` (the writers' lock).
//!
//! Invariants the log keeps:
//! - A batch of records is framed by its length and a CRC32C of its body; a reader never serves
//!   a batch whose frame is incomplete or whose CRC does not match. A writer that opens a
//!   partition truncates such a tail (reporting it), so the next append follows the last good batch.
//! - Offsets are dense: batch `k + 1` starts at the offset after the last record of batch `k`.
//! - Only one writer appends at a time (an exclusive file lock, across processes); readers take
//!   no lock.
//! - A transaction is written as a contiguous run of batches whose last batch carries the commit
//!   flag. Readers deliver a transaction's records only once that last batch is on disk; a run
//!   without it (its writer died) is truncated by the next writer. Committing a producer's
//!   sequence number that is not above its last committed one does nothing (idempotent commit).
//! - An append returns after the data is durable according to the durability setting (fsync by
//!   default).

mod error;
mod format;
mod reader;
mod repair;
mod segment;
mod topic;
mod writer;

pub use error::LogError;
pub use format::{DEFAULT_MAX_MESSAGE_BYTES, MAX_RECORD_BYTES, Record};
pub use reader::{Chunk, PartitionReader, RecordRef};
pub use repair::{DamagedRange, RepairReport};
pub use topic::{Log, MAX_PARTITIONS, MAX_SEGMENT_BYTES, PartitionInfo, Topic, TopicConfig, validate_topic_name};
pub use writer::{ChunkSource, Durability, PartitionWriter, TxnOutcome};

pub type Result<T, E = LogError> = std::result::Result<T, E>;
