//! The topic source: reads a Keel topic's partitions, decodes JSON records to the table's
//! schema, tracks a watermark per partition, and routes records that do not decode according to
//! the bad-records policy.
//!
//! Invariants: the checkpointed position of a partition is the offset after the last record this
//! subtask turned into a row or a bad-record outcome, so a restore neither skips nor repeats a
//! record; a partition's watermark is its largest event time minus the declared delay, and the
//! subtask's is the minimum over partitions that are neither idle nor finished; bounded reading
//! stops exactly at the end offsets recorded when the job first started.
//!
//! A bad record's dead letter holds a bounded prefix of it (`dead_letter`); a record nested
//! deeper than `json::MAX_JSON_DEPTH` is a bad record.
//!
//! Each poll turns one batch as its producer wrote it (one `keel produce` flush, one committed
//! transaction) into one Arrow batch, and the watermark moves after it; so which records of a
//! partition are late depends on the data and its batching, not on timing.

use crate::error::ConnectorError;
use crate::json::JsonDecoder;
use crate::staging::StagedTopicWriter;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::physical_expr::PhysicalExpr;
use keel_log::{Log, PartitionReader, Topic, TopicConfig};
use keel_runtime::{Metrics, RestoredState, Result, RuntimeError, Source, SourcePoll, TaskContext, WatermarkStatus};
use keel_types::time::MIN_WATERMARK;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to do with a record that does not decode or does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Write it, with the error and its position, to this topic (exactly once).
    DeadLetter { topic: String },
    /// Count it and go on.
    Skip,
    /// Fail the job, naming the record's position.
    Fail,
}

/// A topic source's configuration, resolved before the job starts.
#[derive(Debug, Clone)]
pub struct TopicSourceConfig {
    pub data_dir: PathBuf,
    /// Name of the table reading the topic (for messages and dead letters).
    pub table: String,
    pub topic: String,
    /// The columns stored in records (decoded from JSON).
    pub schema: SchemaRef,
    /// Expressions computing every table column from the decoded ones (computed columns), with
    /// the table's schema; `None` when the table has no computed column.
    pub computed: Option<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef)>,
    /// The event-time column (of the table, after computed columns) and the watermark delay in
    /// milliseconds.
    pub event_time: Option<(usize, i64)>,
    /// Offsets to start from, per partition, when there is no checkpoint.
    pub start_offsets: Vec<u64>,
    /// Offsets to stop at, per partition (bounded mode).
    pub end_offsets: Option<Vec<u64>>,
    pub bad_records: BadRecordPolicy,
    /// A partition without new records for this long stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
    pub max_batch_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionState {
    partition: u32,
    offset: u64,
    max_ts: i64,
}

struct Partition {
    state: PartitionState,
    reader: Option<PartitionReader>,
    end: Option<u64>,
    /// Since when reads have found nothing new (None while data keeps coming).
    empty_since: Option<Instant>,
}

impl Partition {
    fn finished(&self) -> bool {
        self.end.is_some_and(|e| self.state.offset >= e)
    }
}

pub struct TopicSource {
    cfg: TopicSourceConfig,
    uid: String,
    topic: Option<Topic>,
    parts: Vec<Partition>,
    cursor: usize,
    decoder: JsonDecoder,
    dead_letters: Option<StagedTopicWriter>,
    metrics: Option<std::sync::Arc<Metrics>>,
}

impl TopicSource {
    pub fn new(cfg: TopicSourceConfig, uid: &str) -> Result<Self> {
        let decoder = JsonDecoder::new(cfg.schema.clone())
            .map_err(|e| RuntimeError::User(format!("table {}: {e}", cfg.table)))?;
        Ok(TopicSource {
            cfg,
            uid: uid.to_string(),
            topic: None,
            parts: vec![],
            cursor: 0,
            decoder,
            dead_letters: None,
            metrics: None,
        })
    }

    fn handle_bad(&mut self, partition: u32, offset: u64, value: &[u8], reason: &str) -> Result<()> {
        if let Some(m) = &self.metrics {
            Metrics::add(&m.bad_records, 1);
        }
        match &self.cfg.bad_records {
            BadRecordPolicy::Fail => Err(RuntimeError::User(format!(
                "table '{}': record at topic '{}' partition {partition} offset {offset} does not fit the schema: {} \
                 ('bad-records' = 'fail'; use 'dead-letter' or 'skip' to keep going)",
                self.cfg.table,
                self.cfg.topic,
                crate::dead_letter::bounded_reason(reason)
            ))),
            BadRecordPolicy::Skip => {
                tracing::debug!(table = %self.cfg.table, partition, offset, "skipping bad record: {reason}");
                Ok(())
            }
            BadRecordPolicy::DeadLetter { .. } => {
                let mut place = serde_json::Map::new();
                place.insert("table".into(), self.cfg.table.clone().into());
                place.insert("topic".into(), self.cfg.topic.clone().into());
                place.insert("partition".into(), partition.into());
                place.insert("offset".into(), offset.into());
                let letter = crate::dead_letter::letter(place, reason, value, value.len() as u64);
                let dl = self
                    .dead_letters
                    .as_mut()
                    .ok_or_else(|| RuntimeError::Internal("dead-letter writer not open".into()))?;
                dl.write_letter(letter).map_err(RuntimeError::from)
            }
        }
    }

    fn read_partition(&mut self, idx: usize) -> Result<Option<RecordBatch>> {
        let end = self.parts[idx].end.unwrap_or(u64::MAX);
        let partition = self.parts[idx].state.partition;
        let Some(reader) = self.parts[idx].reader.as_mut() else { return Ok(None) };
        let Some(chunk) = reader.read_batches(self.cfg.max_batch_bytes, 1).map_err(ConnectorError::from)? else {
            self.parts[idx].empty_since.get_or_insert_with(Instant::now);
            return Ok(None);
        };
        let position = reader.position();
        for (from, to) in chunk.gaps() {
            tracing::warn!(
                "table '{}': offsets {from}..{} of topic '{}' partition {partition} were lost to damage and \
                 removed by `keel topic repair`; skipping them",
                self.cfg.table,
                to - 1,
                self.cfg.topic
            );
        }
        let mut values: Vec<&[u8]> = Vec::with_capacity(chunk.len());
        let mut offsets: Vec<u64> = Vec::with_capacity(chunk.len());
        chunk
            .for_each(|r| {
                if r.offset < end {
                    values.push(r.value);
                    offsets.push(r.offset);
                }
            })
            .map_err(ConnectorError::from)?;
        let Some(&last) = offsets.last() else {
            self.parts[idx].state.offset = self.parts[idx].state.offset.max(end.min(position));
            return Ok(None);
        };
        let decoded = self.decoder.decode(&values).map_err(|e| RuntimeError::Internal(format!("JSON decoder: {e}")))?;
        for (i, reason) in &decoded.bad {
            let (off, val) = (offsets[*i], values[*i]);
            self.handle_bad(partition, off, val, reason)?;
        }
        let batch = match &self.cfg.computed {
            None => decoded.batch,
            Some((exprs, schema)) => {
                let n = decoded.batch.num_rows();
                let cols = exprs
                    .iter()
                    .map(|e| e.evaluate(&decoded.batch).and_then(|v| v.into_array(n)))
                    .collect::<datafusion::error::Result<Vec<_>>>()
                    .map_err(RuntimeError::expr(format!("computed columns of table {}", self.cfg.table)))?;
                RecordBatch::try_new(schema.clone(), cols).map_err(RuntimeError::arrow("computed columns"))?
            }
        };
        let p = &mut self.parts[idx];
        p.state.offset = last + 1;
        p.empty_since = None;
        if let Some((col, _)) = self.cfg.event_time
            && let Some(max) = max_millis(batch.column(col))?
        {
            p.state.max_ts = p.state.max_ts.max(max);
        }
        Ok(Some(batch))
    }
}

/// The largest value of a time column, in epoch milliseconds.
pub(crate) fn max_millis(col: &dyn Array) -> Result<Option<i64>> {
    let t = DataType::Timestamp(TimeUnit::Millisecond, None);
    let owned;
    let col = if col.data_type() == &t {
        col
    } else {
        owned = arrow::compute::cast(&arrow::array::make_array(col.to_data()), &t)
            .map_err(RuntimeError::arrow("event time"))?;
        owned.as_ref()
    };
    Ok(arrow::compute::max(col.as_primitive::<TimestampMillisecondType>()))
}

impl Source for TopicSource {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.metrics = Some(ctx.metrics.clone());
        let log = Log::open(&self.cfg.data_dir).map_err(ConnectorError::from)?;
        let topic = log.topic(&self.cfg.topic).map_err(ConnectorError::from)?;
        let mut saved: std::collections::HashMap<u32, PartitionState> = Default::default();
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            let states: Vec<PartitionState> = serde_json::from_slice(part).map_err(|e| {
                RuntimeError::Internal(format!("topic source state of '{}' is unreadable: {e}", self.cfg.table))
            })?;
            for s in states {
                saved.insert(s.partition, s);
            }
        }
        self.parts.clear();
        for p in (0..topic.partitions()).filter(|p| p % ctx.parallelism == ctx.subtask) {
            let state = saved.remove(&p).unwrap_or(PartitionState {
                partition: p,
                offset: self.cfg.start_offsets.get(p as usize).copied().unwrap_or(0),
                max_ts: MIN_WATERMARK,
            });
            let reader = Some(topic.reader(p, state.offset).map_err(ConnectorError::from)?);
            let end = self.cfg.end_offsets.as_ref().map(|e| e.get(p as usize).copied().unwrap_or(0));
            self.parts.push(Partition { state, reader, end, empty_since: None });
        }
        self.topic = Some(topic);
        if let BadRecordPolicy::DeadLetter { topic } = &self.cfg.bad_records {
            let dl = log.topic_or_create(topic, TopicConfig::new(1)).map_err(ConnectorError::from)?;
            let uid = format!("{}-dead-letters", self.uid);
            self.dead_letters = Some(StagedTopicWriter::for_task(dl, ctx, &uid, restored.checkpoint)?);
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        keel_types::faults::hit("source.poll");
        let n = self.parts.len();
        for _ in 0..n {
            let idx = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            if self.parts[idx].finished() {
                continue;
            }
            if let Some(batch) = self.read_partition(idx)? {
                return Ok(SourcePoll::Batch(batch));
            }
        }
        if self.parts.iter().all(Partition::finished) && self.cfg.end_offsets.is_some() {
            return Ok(SourcePoll::Exhausted);
        }
        Ok(SourcePoll::Pending)
    }

    fn watermark(&self) -> WatermarkStatus {
        let Some((_, delay)) = self.cfg.event_time else { return WatermarkStatus::Active(MIN_WATERMARK) };
        if self.parts.is_empty() {
            return WatermarkStatus::Idle(MIN_WATERMARK);
        }
        let idle_after = self.cfg.idle_timeout;
        let active: Vec<&Partition> = self
            .parts
            .iter()
            .filter(|p| !p.finished() && idle_after.is_none_or(|t| p.empty_since.is_none_or(|e| e.elapsed() <= t)))
            .collect();
        if active.is_empty() {
            // Nothing holds the watermark back: every partition is finished or idle.
            let all = self.parts.iter().map(|p| p.state.max_ts).max().unwrap_or(MIN_WATERMARK).saturating_sub(delay);
            return if self.parts.iter().all(Partition::finished) {
                WatermarkStatus::Active(all)
            } else {
                WatermarkStatus::Idle(all)
            };
        }
        let wm = active.iter().map(|p| p.state.max_ts.saturating_sub(delay)).min().unwrap_or(MIN_WATERMARK);
        WatermarkStatus::Active(wm)
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        if let Some(dl) = &mut self.dead_letters {
            dl.pre_commit(checkpoint)?;
        }
        let states: Vec<&PartitionState> = self.parts.iter().map(|p| &p.state).collect();
        serde_json::to_vec(&states).map_err(|e| RuntimeError::Internal(format!("encoding source state: {e}")))
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        if let Some(dl) = &mut self.dead_letters {
            dl.commit_upto(checkpoint)?;
        }
        Ok(())
    }
}
