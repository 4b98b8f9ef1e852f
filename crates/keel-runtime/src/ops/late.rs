//! What a keyed operator does with its late rows (rows whose time the watermark has passed, so
//! that no window, join partner or frame can take them any more): counts them in
//! `late_records`, and, when their table says `'late-records' = 'dead-letter'`, writes them to the
//! dead-letter side output with the reason. The join, the OVER aggregation and the window Top-N
//! share this; the window aggregate, which shows a late row with its window, keeps its own.
//!
//! Invariants: a row is counted once per operator that finds it late; rows written since the
//! last barrier are staged by `pre_commit` at the next one and published by `commit` when that
//! checkpoint completes, so after a restore each late row is written exactly once.

use crate::error::{Result, RuntimeError};
use crate::metrics::Metrics;
use crate::operator::{SideOutput, SideOutputFactory, TaskContext};
use arrow::array::{RecordBatch, UInt32Array};

#[derive(Default)]
pub(crate) struct LateRows {
    out: Option<Box<dyn SideOutput>>,
}

impl LateRows {
    /// The late-row output of a subtask restoring from `checkpoint` (none without `factory`).
    pub fn open(factory: Option<&SideOutputFactory>, ctx: &TaskContext, checkpoint: Option<u64>) -> Result<Self> {
        Ok(LateRows { out: factory.map(|f| (f.0)(ctx, checkpoint)).transpose()? })
    }

    /// Counts rows `rows` of `batch` as late and, with an output, writes them there.
    pub fn found(
        &mut self,
        metrics: Option<&Metrics>,
        batch: &RecordBatch,
        rows: Vec<u32>,
        reason: &str,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if let Some(m) = metrics {
            Metrics::add(&m.late_records, rows.len() as u64);
        }
        if let Some(out) = &mut self.out {
            let late = arrow::compute::take_record_batch(batch, &UInt32Array::from(rows))
                .map_err(RuntimeError::arrow("late rows"))?;
            out.emit(&late, reason)?;
        }
        Ok(())
    }

    /// At a barrier: stages what was written since the last one with `checkpoint`.
    pub fn pre_commit(&mut self, checkpoint: u64) -> Result<()> {
        self.out.as_mut().map_or(Ok(()), |o| o.pre_commit(checkpoint))
    }

    /// When `checkpoint` completes: publishes what it staged.
    pub fn commit(&mut self, checkpoint: u64) -> Result<()> {
        self.out.as_mut().map_or(Ok(()), |o| o.commit(checkpoint))
    }
}

/// A side output for tests that records what happens to it.
#[cfg(test)]
pub(crate) mod testing {
    use crate::error::Result;
    use crate::operator::SideOutput;
    use arrow::array::RecordBatch;
    use std::sync::{Arc, Mutex};

    /// The batches emitted with their reasons, and the pre-commits and commits in order.
    #[derive(Default)]
    pub(crate) struct Recorded {
        pub emitted: Vec<(RecordBatch, String)>,
        pub events: Vec<String>,
    }

    pub(crate) struct RecordingOutput(pub Arc<Mutex<Recorded>>);

    impl SideOutput for RecordingOutput {
        fn emit(&mut self, rows: &RecordBatch, reason: &str) -> Result<()> {
            self.0.lock().unwrap().emitted.push((rows.clone(), reason.to_string()));
            Ok(())
        }
        fn pre_commit(&mut self, checkpoint: u64) -> Result<()> {
            self.0.lock().unwrap().events.push(format!("pre-commit {checkpoint}"));
            Ok(())
        }
        fn commit(&mut self, checkpoint: u64) -> Result<()> {
            self.0.lock().unwrap().events.push(format!("commit {checkpoint}"));
            Ok(())
        }
    }
}
