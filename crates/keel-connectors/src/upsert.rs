//! The upsert topic sink (like Flink's upsert-kafka): each change becomes a keyed record whose
//! key is the JSON object of the table's primary-key columns and whose value is the JSON row, or
//! empty (a tombstone) for a delete. Reading the topic and keeping the latest value per key
//! (dropping a key at its tombstone) gives the current table.
//!
//! Invariants: every record of one key goes to the partition chosen by a stable hash of the key
//! bytes (`keel_types::keys::hash_key`, the hash `keel produce --key` uses), so one key's records
//! stay in order; a `-U` is not written when a `+I`/`+U` of its key follows in the batch (that
//! row overwrites the key), and is a tombstone otherwise (a filter dropped the `+U`: the row left
//! the result); records commit exactly once through the staged two-phase commit of the topic
//! sink.

use crate::changelog_format::{Changes, upsert_batch};
use crate::error::ConnectorError;
use crate::staging::StagedTopicWriter;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use keel_log::{Log, TopicConfig};
use keel_runtime::{Metrics, Operator, RestoredState, Result, RuntimeError, TaskContext};
use std::path::PathBuf;
use std::sync::Arc;

/// Writes a changelog to a topic as keyed upserts and tombstones, exactly once.
pub struct UpsertTopicSink {
    pub data_dir: PathBuf,
    pub topic: String,
    pub uid: String,
    /// The primary-key columns, by name.
    pub key_columns: Vec<String>,
    writer: Option<StagedTopicWriter>,
    partitions: u32,
    /// The data schema the key indices were resolved for, and those indices.
    resolved: Option<(SchemaRef, Vec<usize>)>,
    metrics: Option<Arc<Metrics>>,
}

impl UpsertTopicSink {
    pub fn new(data_dir: PathBuf, topic: String, uid: String, key_columns: Vec<String>) -> Self {
        UpsertTopicSink {
            data_dir,
            topic,
            uid,
            key_columns,
            writer: None,
            partitions: 1,
            resolved: None,
            metrics: None,
        }
    }

    /// The indices of the key columns in `data`'s schema (resolved once per schema).
    fn key_indices(&mut self, data: &RecordBatch) -> Result<Vec<usize>> {
        if let Some((schema, idx)) = &self.resolved
            && schema == &data.schema()
        {
            return Ok(idx.clone());
        }
        let schema = data.schema();
        let mut idx = Vec::with_capacity(self.key_columns.len());
        for name in &self.key_columns {
            let i = schema.index_of(name).map_err(|_| {
                RuntimeError::Internal(format!(
                    "the upsert topic sink writing '{}' has key column {name}, which its input does not have",
                    self.topic
                ))
            })?;
            idx.push(i);
        }
        self.resolved = Some((schema, idx.clone()));
        Ok(idx)
    }
}

/// The partition of an upsert record: a stable hash of its key bytes.
pub fn key_partition(key: &[u8], partitions: u32) -> u32 {
    (keel_types::keys::hash_key(key) % u64::from(partitions.max(1))) as u32
}

impl Operator for UpsertTopicSink {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        let log = Log::open(&self.data_dir).map_err(ConnectorError::from)?;
        let topic = log.topic_or_create(&self.topic, TopicConfig::new(1)).map_err(ConnectorError::from)?;
        self.partitions = topic.partitions();
        self.metrics = Some(ctx.metrics.clone());
        self.writer = Some(StagedTopicWriter::for_task(topic, ctx, &self.uid, restored.checkpoint)?);
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let changes = Changes::of(&batch)?;
        let key_idx = self.key_indices(&changes.data)?;
        let key = changes.data.project(&key_idx).map_err(RuntimeError::arrow("selecting the key columns"))?;
        let partitions = self.partitions;
        let w =
            self.writer.as_mut().ok_or_else(|| RuntimeError::Internal("upsert topic sink used before open".into()))?;
        let records = upsert_batch(&changes, &key)?;
        for (key, value) in &records {
            let value = value.as_deref().unwrap_or_default();
            w.write(key_partition(key.as_bytes(), partitions), Some(key.as_bytes()), value.as_bytes())?;
        }
        if let Some(m) = &self.metrics {
            Metrics::add(&m.records_out, records.len() as u64);
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        if let Some(w) = &mut self.writer {
            w.pre_commit(checkpoint)?;
        }
        Ok(None)
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        if let Some(w) = &mut self.writer {
            w.commit_upto(checkpoint)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use keel_runtime::changelog::{RowKind, changelog_batch, with_op_field};
    use std::collections::HashMap;

    pub(crate) fn ctx(data_dir: &std::path::Path) -> TaskContext {
        TaskContext {
            job: "j".into(),
            stage: "s".into(),
            subtask: 0,
            parallelism: 1,
            key_groups: 128,
            data_dir: data_dir.into(),
            job_dir: data_dir.join("jobs/j"),
            run_id: "r".into(),
            attempt: 0,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// A changelog batch of (k, n) rows with their kinds.
    pub(crate) fn changes(rows: &[(&str, i64, RowKind)]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]);
        let cols = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ];
        let kinds: Vec<RowKind> = rows.iter().map(|r| r.2).collect();
        changelog_batch(with_op_field(&schema), cols, &kinds).unwrap()
    }

    /// Every committed record of `topic`: (partition, key, value) in offset order per partition.
    pub(crate) fn records(data_dir: &std::path::Path, topic: &str) -> Vec<(u32, Option<String>, String)> {
        let t = Log::open(data_dir).unwrap().topic(topic).unwrap();
        let mut out = vec![];
        for p in 0..t.partitions() {
            let mut r = t.reader(p, 0).unwrap();
            while let Some(chunk) = r.read(1 << 20).unwrap() {
                chunk
                    .for_each(|rec| {
                        let key = rec.key.map(|k| String::from_utf8(k.to_vec()).unwrap());
                        out.push((p, key, String::from_utf8(rec.value.to_vec()).unwrap()));
                    })
                    .unwrap();
            }
        }
        out
    }

    #[test]
    fn upserts_commit_on_checkpoint_keyed_and_partitioned_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Log::open(d).unwrap().create_topic("up", TopicConfig::new(4)).unwrap();
        let mut sink = UpsertTopicSink::new(d.into(), "up".into(), "sink-up".into(), vec!["k".into()]);
        sink.open(&ctx(d), RestoredState::default()).unwrap();
        let mut out = vec![];
        use RowKind::*;
        sink.process(changes(&[("a", 1, Insert), ("b", 1, Insert), ("c", 7, Insert)]), &mut out).unwrap();
        sink.process(changes(&[("a", 1, UpdateBefore), ("a", 2, UpdateAfter), ("b", 1, Delete)]), &mut out).unwrap();
        // A lone -U (a filter dropped its +U): the row left the result.
        sink.process(changes(&[("c", 7, UpdateBefore)]), &mut out).unwrap();
        // An append-only batch is a changelog of inserts.
        let plain = changes(&[("d", 4, Insert)]);
        sink.process(plain.project(&[0, 1]).unwrap(), &mut out).unwrap();
        assert!(out.is_empty());
        sink.snapshot(1).unwrap();
        assert!(records(d, "up").is_empty(), "nothing is visible before the checkpoint completes");
        sink.checkpoint_complete(1).unwrap();

        let recs = records(d, "up");
        assert_eq!(recs.len(), 7, "{recs:?}");
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for (p, key, value) in &recs {
            let key = key.clone().expect("every upsert record has a key");
            assert_eq!(*p, key_partition(key.as_bytes(), 4), "key {key} in the wrong partition");
            by_key.entry(key).or_default().push(value.clone());
        }
        assert_eq!(by_key[r#"{"k":"a"}"#], vec![r#"{"k":"a","n":1}"#, r#"{"k":"a","n":2}"#]);
        assert_eq!(by_key[r#"{"k":"b"}"#], vec![r#"{"k":"b","n":1}"#, ""]);
        assert_eq!(by_key[r#"{"k":"c"}"#], vec![r#"{"k":"c","n":7}"#, ""]);
        assert_eq!(by_key[r#"{"k":"d"}"#], vec![r#"{"k":"d","n":4}"#]);
    }

    #[test]
    fn a_key_column_the_input_lacks_is_an_internal_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = UpsertTopicSink::new(dir.path().into(), "up".into(), "u".into(), vec!["id".into()]);
        sink.open(&ctx(dir.path()), RestoredState::default()).unwrap();
        let err = sink.process(changes(&[("a", 1, RowKind::Insert)]), &mut vec![]).unwrap_err();
        assert!(matches!(err, RuntimeError::Internal(_)) && err.to_string().contains("key column id"), "{err}");
    }
}
