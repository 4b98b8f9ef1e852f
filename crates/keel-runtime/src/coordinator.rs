//! The checkpoint coordinator: makes each checkpoint's directory and triggers it on an interval,
//! collects every task's acknowledgement (the tasks write their operators' state files into the
//! directory themselves), fsyncs those files and writes the manifest, then tells tasks to commit;
//! it also decides when a bounded job ends and carries out a graceful stop.
//!
//! Invariants: at most one checkpoint is in flight; a checkpoint is complete only when every task
//! acknowledged it and its manifest is durable, and only then is `CheckpointComplete` sent; the
//! last checkpoint of a job (bounded end or stop) is taken through `Finish`, after which no other
//! checkpoint is triggered; checkpoint ids only grow, across restarts too; the directory of an
//! expired checkpoint is deleted as soon as every task has acknowledged it or a later one (a
//! task writes into a checkpoint's directory only before it acknowledges it, and handles
//! barriers in order), so a job whose checkpoints keep expiring does not fill the disk with
//! their state, and no task ever writes into a deleted directory.

use crate::error::{Result, RuntimeError};
use crate::message::{Control, Event};
use crate::metrics::Metrics;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use keel_state::{CheckpointStore, CheckpointWriter, ManifestFile};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a job attempt ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Bounded input was fully processed and committed in checkpoint `checkpoint`.
    Finished { checkpoint: u64 },
    /// Stopped on request after the final checkpoint `checkpoint` was committed.
    Stopped { checkpoint: u64 },
}

pub(crate) struct TaskInfo {
    pub name: String,
    pub is_source: bool,
    pub control: Sender<Control>,
}

struct Pending {
    id: u64,
    started: Instant,
    /// The checkpoint's directory, made before the trigger went out (tasks write into it).
    writer: CheckpointWriter,
    acks: HashMap<usize, Vec<ManifestFile>>,
    final_drain: Option<bool>,
}

pub(crate) struct Coordinator {
    pub tasks: Vec<TaskInfo>,
    pub events: Receiver<Event>,
    pub store: CheckpointStore,
    pub interval: Option<Duration>,
    pub timeout: Duration,
    pub next_id: u64,
    pub bounded: bool,
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Job facts written into every manifest (run id, operator parallelism).
    pub meta: serde_json::Value,
}

impl Coordinator {
    fn send_all(&self, control: Control, sources_only: bool) {
        for t in &self.tasks {
            if !sources_only || t.is_source {
                // A task that already exited has nothing to receive; its failure is reported separately.
                let _ = t.control.send(control.clone());
            }
        }
    }

    /// Runs until the job finishes, stops, or a task fails.
    pub fn run(mut self) -> Result<JobOutcome> {
        let mut pending: Option<Pending> = None;
        let mut last_trigger = Instant::now();
        let mut exhausted: HashSet<usize> = HashSet::new();
        let mut finishing = false;
        // Expired checkpoints whose directories wait for the last task to pass them, and the
        // newest checkpoint each task acknowledged.
        let mut expired: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
        let mut acked = vec![0u64; self.tasks.len()];
        let sources = self.tasks.iter().filter(|t| t.is_source).count();
        loop {
            let wait = Duration::from_millis(50);
            match self.events.recv_timeout(wait) {
                Ok(Event::Ack { task, checkpoint, files }) => {
                    acked[task] = acked[task].max(checkpoint);
                    let passed = acked.iter().copied().min().unwrap_or(0);
                    while expired.front().is_some_and(|&old| old <= passed) {
                        if let Some(old) = expired.pop_front() {
                            self.store.discard_incomplete(old)?;
                        }
                    }
                    let Some(p) = pending.as_mut().filter(|p| p.id == checkpoint) else {
                        // An ack of an aborted checkpoint: ignore it.
                        continue;
                    };
                    p.acks.insert(task, files);
                    if p.acks.len() == self.tasks.len() {
                        let Some(done) = pending.take() else { continue };
                        let (id, final_drain) = (done.id, done.final_drain);
                        self.complete(done)?;
                        if let Some(drain) = final_drain {
                            self.send_all(Control::Shutdown, false);
                            // The last commits happen as tasks receive CheckpointComplete: the job
                            // is done only if every task then exits cleanly.
                            self.await_clean_exit()?;
                            return Ok(if drain {
                                JobOutcome::Finished { checkpoint: id }
                            } else {
                                JobOutcome::Stopped { checkpoint: id }
                            });
                        }
                    }
                }
                Ok(Event::SourceExhausted { task }) => {
                    exhausted.insert(task);
                }
                Ok(Event::TaskEnded { .. }) => {}
                Ok(Event::TaskFailed { task, error }) => return Err(self.root_cause(task, error)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RuntimeError::Internal("every task exited without reporting".into()));
                }
            }
            if let Some(p) = &pending
                && p.final_drain.is_none()
                && p.started.elapsed() > self.timeout
            {
                tracing::warn!(
                    "checkpoint {} expired after {:?} ({} of {} tasks acknowledged); continuing, the next one will cover its data",
                    p.id,
                    self.timeout,
                    p.acks.len(),
                    self.tasks.len()
                );
                Metrics::add(&self.metrics.checkpoints_aborted, 1);
                expired.push_back(p.id);
                pending = None;
            }
            if pending.is_some() || finishing {
                continue;
            }
            let stop = self.stop.load(Ordering::Relaxed);
            let drained = self.bounded && exhausted.len() == sources;
            if stop || drained {
                finishing = true;
                let id = self.take_id();
                tracing::info!(
                    "{} with final checkpoint {id}",
                    if drained { "input fully read; finishing" } else { "stopping" }
                );
                let writer = self.store.writer(id)?;
                pending = Some(Pending {
                    id,
                    started: Instant::now(),
                    writer,
                    acks: HashMap::new(),
                    final_drain: Some(drained),
                });
                self.send_all(Control::Finish { checkpoint: id, drain: drained }, true);
            } else if let Some(interval) = self.interval
                && last_trigger.elapsed() >= interval
            {
                last_trigger = Instant::now();
                let id = self.take_id();
                let writer = self.store.writer(id)?;
                pending =
                    Some(Pending { id, started: Instant::now(), writer, acks: HashMap::new(), final_drain: None });
                self.send_all(Control::Trigger(id), true);
            }
        }
    }

    /// Waits until every task has exited (their event senders are gone); the first real failure
    /// among them (a commit that failed, say) fails the attempt.
    fn await_clean_exit(&self) -> Result<()> {
        let mut failure = None;
        while let Ok(event) = self.events.recv() {
            if let Event::TaskFailed { task, error } = event
                && !matches!(error, RuntimeError::Cancelled(_))
                && failure.is_none()
            {
                tracing::debug!("task {} failed after the final checkpoint: {error}", self.tasks[task].name);
                failure = Some(error);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Fsyncs the state files the tasks wrote, writes the manifest, then tells every task the
    /// checkpoint is complete.
    fn complete(&mut self, p: Pending) -> Result<()> {
        let Pending { id, started, mut writer, acks, .. } = p;
        for files in acks.into_values() {
            for f in files {
                writer.adopt(f)?;
            }
        }
        keel_types::faults::hit("checkpoint.before-manifest");
        writer.commit(self.meta.clone())?;
        keel_types::faults::hit("checkpoint.after-manifest");
        self.metrics.last_checkpoint.store(id, Ordering::Relaxed);
        self.metrics.last_checkpoint_ms.store(keel_types::time::now_ms(), Ordering::Relaxed);
        Metrics::add(&self.metrics.checkpoints_completed, 1);
        tracing::debug!("checkpoint {} complete in {:?}", id, started.elapsed());
        self.send_all(Control::CheckpointComplete(id), false);
        Ok(())
    }

    /// The first real failure: a cancellation is a consequence, so look briefly for its cause.
    fn root_cause(&self, task: usize, error: RuntimeError) -> RuntimeError {
        let mut first = (task, error);
        if matches!(first.1, RuntimeError::Cancelled(_)) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match self.events.recv_timeout(left) {
                    Ok(Event::TaskFailed { task, error }) if !matches!(error, RuntimeError::Cancelled(_)) => {
                        first = (task, error);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        let name = &self.tasks[first.0].name;
        tracing::debug!("task {name} failed: {}", first.1);
        first.1
    }
}

/// The checkpoint file name of an operator's state in one subtask.
pub(crate) fn state_file_name(uid: &str, subtask: u32) -> String {
    let safe: String =
        uid.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '_' }).collect();
    format!("{safe}.{subtask}")
}
