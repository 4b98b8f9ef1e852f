//! Snapshots of the OVER aggregate and their restore.
//!
//! A snapshot is one Arrow IPC table, the watermark in its schema metadata, with columns
//! `key_group`, `kind` (0: a buffered row, 1: an emitted row kept for later frames, 2: a running
//! accumulator), `seq` (arrival number of a buffered row, position of a kept row), `time` (ms),
//! then the input columns (all of a buffered row; the partition and argument columns of a kept
//! row; the partition columns of a running accumulator) and, for unbounded frames, the
//! accumulators' state columns. Invariant: a restore keeps exactly the rows of the key groups
//! this subtask owns, whatever the parallelism that wrote the snapshot.

use super::{OverAggregate, i64s};
use crate::error::{Result, RuntimeError};
use crate::operator::{RestoredState, TaskContext};
use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt8Array, UInt32Array, UInt64Array, new_null_array,
};
use arrow::compute::{concat, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, UInt8Type, UInt32Type, UInt64Type};
use keel_types::KeyGroupRange;
use std::sync::Arc;

impl OverAggregate {
    /// Loads the rows and accumulators of `restored` that belong to this subtask.
    pub(super) fn restore(&mut self, ctx: &TaskContext, restored: &RestoredState) -> Result<()> {
        let range = KeyGroupRange::of_subtask(ctx.subtask, ctx.key_groups, ctx.parallelism);
        let ni = self.ni();
        let mut wm: Option<i64> = None;
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            let batch = keel_state::batch_from_ipc(part, "OVER aggregate state")?;
            if let Some(w) = batch.schema().metadata().get("watermark").and_then(|w| w.parse::<i64>().ok()) {
                wm = Some(wm.map_or(w, |m| m.min(w)));
            }
            if batch.num_columns() < 4 + ni {
                return Err(RuntimeError::Internal("OVER aggregate state has too few columns".into()));
            }
            let kgs = batch.column(0).as_primitive::<UInt32Type>();
            let kinds = batch.column(1).as_primitive::<UInt8Type>();
            let mut by_kind: [Vec<u32>; 3] = Default::default();
            for i in 0..batch.num_rows() {
                if range.contains(kgs.value(i)) {
                    let list = by_kind.get_mut(kinds.value(i) as usize).ok_or_else(|| {
                        RuntimeError::Internal(format!("OVER aggregate state row of kind {}", kinds.value(i)))
                    })?;
                    list.push(i as u32);
                }
            }
            let [buffered, history, running] = by_kind.map(|idx| {
                take_record_batch(&batch, &UInt32Array::from(idx)).map_err(RuntimeError::arrow("OVER state"))
            });
            let buffered = buffered?;
            if buffered.num_rows() > 0 {
                let rows = RecordBatch::try_new(self.spec.input_schema.clone(), buffered.columns()[4..4 + ni].to_vec())
                    .map_err(RuntimeError::arrow("OVER state"))?;
                let seqs = buffered.column(2).as_primitive::<UInt64Type>().values();
                self.next_seq = self.next_seq.max(seqs.iter().max().map_or(0, |s| s + 1));
                let all = (0..rows.num_rows() as u32).collect();
                self.hold(&rows, i64s(buffered.column(3)), all, |i| seqs[i])?;
            }
            let history = history?;
            if history.num_rows() > 0 {
                self.restore_history(&history)?;
            }
            let running = running?;
            if running.num_rows() > 0 && self.is_running() {
                let pcols: Vec<ArrayRef> =
                    self.spec.partition_cols.iter().map(|&c| running.column(4 + c).clone()).collect();
                let keys = self.keys(&pcols)?;
                let kgs = running.column(0).as_primitive::<UInt32Type>().values();
                let pids: Vec<u32> = (0..running.num_rows())
                    .map(|i| self.partition_of(keys.as_ref().map_or(&[][..], |k| k.row(i).data()), kgs[i]))
                    .collect();
                let mut at = 4 + ni;
                for a in &mut self.running {
                    let n = a.state(&[], "x")?.len();
                    let cols = running.columns().get(at..at + n).ok_or_else(|| {
                        RuntimeError::Internal("OVER aggregate state lacks accumulator columns".into())
                    })?;
                    a.restore(&pids, cols)?;
                    at += n;
                }
            }
        }
        if let Some(w) = wm {
            self.watermark = w;
        }
        Ok(())
    }

    /// This subtask's state as an Arrow IPC table (see the module docs).
    pub(super) fn snapshot_state(&self) -> Result<Vec<u8>> {
        let (ni, running) = (self.ni(), self.is_running());
        let buffered = concat_batches(&self.buffer_schema, self.pending.values().map(|(b, _)| b))
            .map_err(RuntimeError::arrow("OVER snapshot"))?;
        let nb = buffered.num_rows();
        let bpids = buffered.column(ni + 2).as_primitive::<UInt32Type>().values();
        let mut kg: Vec<u32> = bpids.iter().map(|&p| self.partitions[p as usize].key_group).collect();
        let mut kind = vec![0u8; nb];
        let mut seq = buffered.column(ni + 1).as_primitive::<UInt64Type>().values().to_vec();
        let mut time = i64s(buffered.column(ni)).to_vec();
        let mut live: Vec<u32> = self.index.values().copied().collect();
        live.sort_unstable();
        let (mut hist, mut hist_pids) = (Vec::new(), Vec::new());
        for &p in &live {
            let part = &self.partitions[p as usize];
            if let Some(h) = &part.history {
                let cut = self.history_cut(i64s(h.column(0)));
                let h = h.slice(cut, h.num_rows() - cut);
                for (j, &t) in i64s(h.column(0)).iter().enumerate() {
                    kg.push(part.key_group);
                    kind.push(1);
                    seq.push(j as u64);
                    time.push(t);
                    hist_pids.push(p);
                }
                hist.push(h);
            }
        }
        let hist = concat_batches(&self.history_schema, &hist).map_err(RuntimeError::arrow("OVER snapshot"))?;
        let run_pids = if running { live } else { Vec::new() };
        for &p in &run_pids {
            kg.push(self.partitions[p as usize].key_group);
            kind.push(2);
            seq.push(0);
            time.push(0);
        }
        let (hist_keys, run_keys) = (self.key_columns(&hist_pids)?, self.key_columns(&run_pids)?);
        let (nh, nr) = (hist.num_rows(), run_pids.len());
        let mut fields = vec![
            Field::new("key_group", DataType::UInt32, false),
            Field::new("kind", DataType::UInt8, false),
            Field::new("seq", DataType::UInt64, false),
            Field::new("time", DataType::Int64, false),
        ];
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(kg)),
            Arc::new(UInt8Array::from(kind)),
            Arc::new(UInt64Array::from(seq)),
            Arc::new(Int64Array::from(time)),
        ];
        for (i, f) in self.spec.input_schema.fields().iter().enumerate() {
            let key = self.spec.partition_cols.iter().position(|&c| c == i);
            let h = match (key, self.arg_cols.iter().position(|&c| c == i)) {
                (Some(k), _) => hist_keys[k].clone(),
                (None, Some(a)) => hist.column(a + 1).clone(),
                (None, None) => new_null_array(f.data_type(), nh),
            };
            let r = key.map_or_else(|| new_null_array(f.data_type(), nr), |k| run_keys[k].clone());
            cols.push(
                concat(&[buffered.column(i).as_ref(), h.as_ref(), r.as_ref()])
                    .map_err(RuntimeError::arrow("OVER snapshot"))?,
            );
            fields.push(f.as_ref().clone().with_nullable(true));
        }
        for (i, a) in self.running.iter().enumerate() {
            for (f, c) in a.state(&run_pids, &format!("agg{i}"))? {
                let nulls = new_null_array(c.data_type(), nb + nh);
                cols.push(concat(&[nulls.as_ref(), c.as_ref()]).map_err(RuntimeError::arrow("OVER snapshot"))?);
                fields.push(f.with_nullable(true));
            }
        }
        let meta = [("watermark".to_string(), self.watermark.to_string())].into();
        let schema = Arc::new(Schema::new(fields).with_metadata(meta));
        let batch = RecordBatch::try_new(schema, cols).map_err(RuntimeError::arrow("OVER snapshot"))?;
        Ok(keel_state::batch_to_ipc(&batch)?)
    }

    /// Loads history rows of a snapshot (state schema, all of this subtask).
    fn restore_history(&mut self, rows: &RecordBatch) -> Result<()> {
        let pcols: Vec<ArrayRef> = self.spec.partition_cols.iter().map(|&c| rows.column(4 + c).clone()).collect();
        let keys = self.keys(&pcols)?;
        let kgs = rows.column(0).as_primitive::<UInt32Type>().values();
        let seqs = rows.column(2).as_primitive::<UInt64Type>().values();
        let pids: Vec<u32> = (0..rows.num_rows())
            .map(|i| self.partition_of(keys.as_ref().map_or(&[][..], |k| k.row(i).data()), kgs[i]))
            .collect();
        let mut order: Vec<u32> = (0..rows.num_rows() as u32).collect();
        order.sort_by_key(|&i| (pids[i as usize], seqs[i as usize]));
        let mut cols = vec![rows.column(3).clone()];
        cols.extend(self.arg_cols.iter().map(|&c| rows.column(4 + c).clone()));
        let hist =
            RecordBatch::try_new(self.history_schema.clone(), cols).map_err(RuntimeError::arrow("OVER state"))?;
        for group in order.chunk_by(|&a, &b| pids[a as usize] == pids[b as usize]) {
            let h = take_record_batch(&hist, &UInt32Array::from(group.to_vec()))
                .map_err(RuntimeError::arrow("OVER state"))?;
            self.set_history(pids[group[0] as usize], Some(h));
        }
        Ok(())
    }
}
