//! The interfaces operators, sources and sinks implement, and the context a task gives them.
//!
//! Invariants: an operator sees data, watermarks and barriers of its task in arrival order, on
//! one thread; `snapshot(n)` is called after everything before barrier `n` was processed and
//! before anything after it; `checkpoint_complete(n)` only after checkpoint `n` is durable. A sink
//! pre-commits in `snapshot` and commits in `checkpoint_complete`, so what it writes becomes
//! visible exactly once.

use crate::error::{Result, RuntimeError};
use crate::metrics::Metrics;
use arrow::array::RecordBatch;
use std::path::PathBuf;
use std::sync::Arc;

/// Where and what a subtask is.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub job: String,
    pub stage: String,
    pub subtask: u32,
    pub parallelism: u32,
    pub key_groups: u32,
    pub data_dir: PathBuf,
    /// This job's directory (`DATA_DIR/jobs/NAME`), where sinks keep staged transactions.
    pub job_dir: PathBuf,
    /// Identifies this run of the job (a fresh start gets a new one); used to name transactions.
    pub run_id: String,
    /// How many times the job restarted in this process.
    pub attempt: u32,
    pub metrics: Arc<Metrics>,
}

#[cfg(test)]
impl TaskContext {
    /// A context for operator unit tests: subtask `subtask` of `parallelism`, 128 key groups.
    pub(crate) fn for_test(subtask: u32, parallelism: u32) -> Self {
        TaskContext {
            job: "t".into(),
            stage: "s".into(),
            subtask,
            parallelism,
            key_groups: 128,
            data_dir: ".".into(),
            job_dir: ".".into(),
            run_id: "r".into(),
            attempt: 0,
            metrics: Arc::new(Metrics::default()),
        }
    }
}

/// State restored for one operator: the snapshots of every subtask of the previous run.
#[derive(Debug, Clone, Default)]
pub struct RestoredState {
    /// One entry per subtask of the run that took the checkpoint.
    pub parts: Vec<Vec<u8>>,
    /// Which of `parts` this subtask inherits for non-keyed state (old subtask `i` goes to new
    /// subtask `i % parallelism`). Keyed state instead filters all parts by key group.
    pub inherited: Vec<usize>,
    /// The checkpoint restored from.
    pub checkpoint: Option<u64>,
}

impl RestoredState {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The parts this subtask inherits.
    pub fn inherited_parts(&self) -> impl Iterator<Item = &[u8]> {
        self.inherited.iter().filter_map(|&i| self.parts.get(i).map(Vec::as_slice))
    }
}

/// A streaming operator in a task's chain.
pub trait Operator: Send {
    /// Restores state (empty on a fresh start).
    fn open(&mut self, _ctx: &TaskContext, _restored: RestoredState) -> Result<()> {
        Ok(())
    }
    /// Processes one batch, appending results to `out`.
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()>;
    /// The next piece of the output of the last `process` (or `process_side`) call, for an
    /// operator whose output for one batch can be far larger than the batch (the window assigner
    /// repeats a row once per window): the task passes each piece on before asking for the next,
    /// so only one piece is held at a time. Appends to `out` and returns true while it had more.
    fn more_output(&mut self, _out: &mut Vec<RecordBatch>) -> Result<bool> {
        Ok(false)
    }
    /// Processes one batch from input `side` of a two-input stage (0 = left, 1 = right; the
    /// left side also arrives through `process`). Only the first operator of a join stage gets
    /// side 1; for any other operator it is an internal error.
    fn process_side(&mut self, side: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        match side {
            0 => self.process(batch, out),
            _ => Err(RuntimeError::Internal(format!("operator got a batch on input side {side} but has one input"))),
        }
    }
    /// The task's watermark advanced to `watermark`; emit what it completes.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }
    /// Processing time (wall clock, epoch ms) passed `now`: called every few tens of
    /// milliseconds, for processing-time windows.
    fn on_processing_time(&mut self, _now: i64, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }
    /// Snapshot for checkpoint `checkpoint` (sinks pre-commit here). `None`: no state.
    fn snapshot(&mut self, _checkpoint: u64) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// `snapshot`, written into `out` (what the task calls: `out` is the operator's state file in
    /// the checkpoint's directory); false when there is no state (nothing written). Operators
    /// with states of GBs override it to encode their state a chunk at a time straight into the
    /// file, so that it is never held whole as bytes; their `snapshot` is then this into memory.
    fn snapshot_into(&mut self, checkpoint: u64, out: &mut dyn keel_state::StateOut) -> Result<bool> {
        match self.snapshot(checkpoint)? {
            Some(bytes) => {
                out.write_all(&bytes).map_err(|e| write_error(out, e))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
    /// Checkpoint `checkpoint` is durable (sinks commit here).
    fn checkpoint_complete(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }
}

/// What a source's poll produced.
#[derive(Debug)]
pub enum SourcePoll {
    Batch(RecordBatch),
    /// Nothing available right now.
    Pending,
    /// Bounded input is fully read.
    Exhausted,
}

/// The watermark state of a source subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkStatus {
    Active(i64),
    /// No partition has data for now. The watermark is what the source can still vouch for
    /// (the largest of its partitions'); it is emitted before the source is marked idle, so
    /// that what was read is not held back.
    Idle(i64),
}

/// A source of batches with replayable positions.
pub trait Source: Send {
    /// Restores positions (or starts from the configured start when `restored` is empty).
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()>;
    /// The next batch, already decoded to the table's schema.
    fn poll(&mut self) -> Result<SourcePoll>;
    /// The combined watermark of this subtask's partitions.
    fn watermark(&self) -> WatermarkStatus;
    /// Positions (and watermark state) for checkpoint `checkpoint`.
    fn snapshot(&mut self, checkpoint: u64) -> Result<Vec<u8>>;
    /// Checkpoint `checkpoint` is durable (commit side outputs such as dead letters).
    fn checkpoint_complete(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }
}

/// Where an operator sends rows it cannot use (late rows), committed exactly once with the
/// checkpoints like a sink: written as they come, pre-committed at the barrier, committed when
/// the checkpoint completes.
pub trait SideOutput: Send {
    fn emit(&mut self, rows: &RecordBatch, reason: &str) -> Result<()>;
    fn pre_commit(&mut self, checkpoint: u64) -> Result<()>;
    fn commit(&mut self, checkpoint: u64) -> Result<()>;
}

/// The function behind a `SideOutputFactory`.
pub type MakeSideOutput = dyn Fn(&TaskContext, Option<u64>) -> Result<Box<dyn SideOutput>> + Send + Sync;

/// Creates a subtask's side output, given the checkpoint it restores from.
#[derive(Clone)]
pub struct SideOutputFactory(pub Arc<MakeSideOutput>);

impl std::fmt::Debug for SideOutputFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SideOutputFactory")
    }
}

pub type OperatorFactory = Arc<dyn Fn(&TaskContext) -> Result<Box<dyn Operator>> + Send + Sync>;
pub type SourceFactory = Arc<dyn Fn(&TaskContext) -> Result<Box<dyn Source>> + Send + Sync>;

/// `snapshot_into` memory: the `snapshot` of an operator that overrides `snapshot_into` (its
/// state written a chunk at a time), for whoever wants the bytes themselves.
pub(crate) fn snapshot_in_memory(op: &mut dyn Operator, checkpoint: u64) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    Ok(op.snapshot_into(checkpoint, &mut out)?.then_some(out))
}

/// A failed write of a snapshot into `out`, naming its file.
pub(crate) fn write_error(out: &dyn keel_state::StateOut, source: std::io::Error) -> RuntimeError {
    keel_state::StateError::Io { action: "cannot write state to", path: out.path().to_path_buf(), source }.into()
}
