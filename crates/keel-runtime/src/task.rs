//! Task threads: one per subtask, running a source or reading input edges, pushing batches
//! through the stage's operator chain and out to the next stage.
//!
//! Invariants:
//! - Barrier alignment: once barrier `n` arrives on an input, that input is not read again until
//!   `n` has arrived on every input that has not ended; then the chain snapshots, the task acks,
//!   and `n` is forwarded on every output edge before any later data.
//! - The task's watermark is the minimum over inputs that are neither idle nor ended; it only
//!   moves forward, and operators see it before it is forwarded.
//! - A task that fails reports the error and drops its edges, which stops its neighbours.

use crate::error::{Result, RuntimeError};
use crate::exchange::{Partitioning, split_by_key};
use crate::message::{Control, Event, Message, OperatorSnapshot};
use crate::metrics::Metrics;
use crate::operator::{Operator, Source, SourcePoll, TaskContext, WatermarkStatus};
use arrow::array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TryRecvError};
use keel_types::time::{MAX_WATERMARK, MIN_WATERMARK};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The senders of one outgoing edge (one per downstream subtask).
pub(crate) struct OutputEdge {
    pub partitioning: Partitioning,
    pub senders: Vec<Sender<Message>>,
    pub next: usize,
}

/// A stage's operator chain plus its output edges.
pub(crate) struct Chain {
    pub ops: Vec<(String, Box<dyn Operator>)>,
    pub outputs: Vec<OutputEdge>,
    pub ctx: TaskContext,
    /// Subtask index within the stage, used by forward edges.
    pub subtask: usize,
    /// True for the job's last stage: its watermark is reported as the job's.
    pub is_last_stage: bool,
}

fn disconnected() -> RuntimeError {
    RuntimeError::Cancelled("a downstream task stopped".into())
}

impl Chain {
    fn push(&mut self, from: usize, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if from == self.ops.len() {
            return self.emit(batch);
        }
        let mut out = Vec::new();
        self.ops[from].1.process(batch, &mut out)?;
        for b in out {
            self.push(from + 1, b)?;
        }
        Ok(())
    }

    fn watermark(&mut self, wm: i64) -> Result<()> {
        for i in 0..self.ops.len() {
            let mut out = Vec::new();
            self.ops[i].1.on_watermark(wm, &mut out)?;
            for b in out {
                self.push(i + 1, b)?;
            }
        }
        if self.is_last_stage {
            self.ctx.metrics.watermark.fetch_max(wm, Ordering::Relaxed);
        }
        self.broadcast(Message::Watermark(wm))
    }

    fn snapshot(&mut self, checkpoint: u64, out: &mut Vec<OperatorSnapshot>) -> Result<()> {
        for (uid, op) in &mut self.ops {
            if let Some(bytes) = op.snapshot(checkpoint)? {
                out.push(OperatorSnapshot { uid: uid.clone(), bytes });
            }
        }
        Ok(())
    }

    fn complete(&mut self, checkpoint: u64) -> Result<()> {
        for (_, op) in &mut self.ops {
            op.checkpoint_complete(checkpoint)?;
        }
        Ok(())
    }

    fn emit(&mut self, batch: RecordBatch) -> Result<()> {
        let groups = self.ctx.key_groups;
        for edge in &mut self.outputs {
            let n = edge.senders.len();
            match &edge.partitioning {
                Partitioning::Forward => {
                    edge.senders[self.subtask].send(Message::Data(batch.clone())).map_err(|_| disconnected())?
                }
                Partitioning::Rebalance => {
                    edge.next = (edge.next + 1) % n;
                    edge.senders[edge.next].send(Message::Data(batch.clone())).map_err(|_| disconnected())?
                }
                Partitioning::Hash(keys) => {
                    for (target, part) in split_by_key(&batch, keys, groups, n as u32)?.into_iter().enumerate() {
                        if let Some(part) = part {
                            edge.senders[target].send(Message::Data(part)).map_err(|_| disconnected())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn broadcast(&mut self, msg: Message) -> Result<()> {
        for edge in &self.outputs {
            for s in &edge.senders {
                s.send(msg.clone()).map_err(|_| disconnected())?;
            }
        }
        Ok(())
    }
}

/// What every task shares: its identity and its line to the coordinator.
pub(crate) struct TaskLink {
    pub task: usize,
    pub control: Receiver<Control>,
    pub events: Sender<Event>,
}

impl TaskLink {
    fn ack(&self, checkpoint: u64, snapshots: Vec<OperatorSnapshot>) {
        let _ = self.events.send(Event::Ack { task: self.task, checkpoint, snapshots });
    }

    /// After the task's last message went out: serve commits until shutdown.
    fn serve_until_shutdown(&self, mut on_complete: impl FnMut(u64) -> Result<()>) -> Result<()> {
        let _ = self.events.send(Event::TaskEnded { task: self.task });
        loop {
            match self.control.recv() {
                Ok(Control::CheckpointComplete(n)) => on_complete(n)?,
                Ok(Control::Shutdown) | Err(_) => return Ok(()),
                Ok(other) => return Err(RuntimeError::Internal(format!("ended task got {other:?}"))),
            }
        }
    }
}

/// How long a source with no data waits before polling again.
const SOURCE_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs a source subtask until shutdown.
pub(crate) fn run_source_task(uid: &str, mut source: Box<dyn Source>, mut chain: Chain, link: TaskLink) -> Result<()> {
    let mut exhausted = false;
    let mut last_wm = MIN_WATERMARK;
    let mut idle = false;
    let mut early: Option<Control> = None;
    loop {
        // Control first: a trigger is served at the next batch boundary.
        let control = if let Some(c) = early.take() {
            Some(c)
        } else if exhausted {
            Some(link.control.recv().map_err(|_| RuntimeError::Cancelled("job stopping".into()))?)
        } else {
            match link.control.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return Err(RuntimeError::Cancelled("job stopping".into())),
            }
        };
        if let Some(control) = control {
            match control {
                Control::Trigger(n) => {
                    let mut snaps = vec![];
                    snaps.push(OperatorSnapshot { uid: uid.to_string(), bytes: source.snapshot(n)? });
                    chain.snapshot(n, &mut snaps)?;
                    link.ack(n, snaps);
                    chain.broadcast(Message::Barrier(n))?;
                }
                Control::Finish { checkpoint, drain } => {
                    if drain {
                        chain.watermark(MAX_WATERMARK)?;
                    }
                    let mut snaps =
                        vec![OperatorSnapshot { uid: uid.to_string(), bytes: source.snapshot(checkpoint)? }];
                    chain.snapshot(checkpoint, &mut snaps)?;
                    link.ack(checkpoint, snaps);
                    chain.broadcast(Message::Barrier(checkpoint))?;
                    chain.broadcast(Message::End)?;
                    return link.serve_until_shutdown(|n| {
                        source.checkpoint_complete(n)?;
                        chain.complete(n)
                    });
                }
                Control::CheckpointComplete(n) => {
                    source.checkpoint_complete(n)?;
                    chain.complete(n)?;
                }
                Control::Shutdown => return Ok(()),
            }
            continue;
        }
        match source.poll()? {
            SourcePoll::Batch(batch) => {
                Metrics::add(&chain.ctx.metrics.records_in, batch.num_rows() as u64);
                chain.push(0, batch)?;
            }
            SourcePoll::Pending => match link.control.recv_timeout(SOURCE_POLL_INTERVAL) {
                Ok(c) => early = Some(c),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(RuntimeError::Cancelled("job stopping".into())),
            },
            SourcePoll::Exhausted => {
                exhausted = true;
                let _ = link.events.send(Event::SourceExhausted { task: link.task });
            }
        }
        match source.watermark() {
            WatermarkStatus::Active(wm) if wm > last_wm || idle => {
                idle = false;
                last_wm = last_wm.max(wm);
                chain.watermark(last_wm)?;
            }
            WatermarkStatus::Idle if !idle => {
                idle = true;
                chain.broadcast(Message::Idle)?;
            }
            _ => {}
        }
    }
}

/// Per-input bookkeeping of an input task.
#[derive(Clone, Copy)]
struct InputState {
    wm: i64,
    idle: bool,
    ended: bool,
    blocked: bool,
}

/// Runs a subtask that reads input edges, until shutdown.
pub(crate) fn run_input_task(inputs: Vec<Receiver<Message>>, mut chain: Chain, link: TaskLink) -> Result<()> {
    let mut st = vec![InputState { wm: MIN_WATERMARK, idle: false, ended: false, blocked: false }; inputs.len()];
    let mut current_wm = MIN_WATERMARK;
    let mut sent_idle = false;
    let mut barrier: Option<u64> = None;
    loop {
        let mut sel = Select::new();
        let ctrl = sel.recv(&link.control);
        let mut map = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            if !st[i].ended && !st[i].blocked {
                map.push(i);
                sel.recv(input);
            }
        }
        let oper = sel.select();
        if oper.index() == ctrl {
            match oper.recv(&link.control) {
                Ok(Control::CheckpointComplete(n)) => chain.complete(n)?,
                Ok(Control::Shutdown) => return Ok(()),
                Ok(other) => return Err(RuntimeError::Internal(format!("input task got {other:?}"))),
                Err(_) => return Err(RuntimeError::Cancelled("job stopping".into())),
            }
            continue;
        }
        let i = map[oper.index() - 1];
        let msg = oper.recv(&inputs[i]).map_err(|_| RuntimeError::Cancelled("an upstream task stopped".into()))?;
        match msg {
            Message::Data(batch) => chain.push(0, batch)?,
            Message::Watermark(wm) => {
                st[i].wm = st[i].wm.max(wm);
                st[i].idle = false;
                advance_watermark(&st, &mut current_wm, &mut sent_idle, &mut chain)?;
            }
            Message::Idle => {
                st[i].idle = true;
                advance_watermark(&st, &mut current_wm, &mut sent_idle, &mut chain)?;
            }
            Message::Barrier(n) => {
                if barrier.is_some_and(|b| b != n) {
                    return Err(RuntimeError::Internal(format!("barrier {n} overtook barrier {barrier:?}")));
                }
                barrier = Some(n);
                st[i].blocked = true;
            }
            Message::End => st[i].ended = true,
        }
        if let Some(n) = barrier
            && st.iter().all(|s| s.blocked || s.ended)
        {
            let mut snaps = vec![];
            chain.snapshot(n, &mut snaps)?;
            link.ack(n, snaps);
            chain.broadcast(Message::Barrier(n))?;
            for s in &mut st {
                s.blocked = false;
            }
            barrier = None;
        }
        if st.iter().all(|s| s.ended) {
            chain.broadcast(Message::End)?;
            return link.serve_until_shutdown(|n| chain.complete(n));
        }
    }
}

fn advance_watermark(st: &[InputState], current: &mut i64, sent_idle: &mut bool, chain: &mut Chain) -> Result<()> {
    let active: Vec<i64> = st.iter().filter(|s| !s.ended && !s.idle).map(|s| s.wm).collect();
    if active.is_empty() {
        if !*sent_idle && st.iter().any(|s| s.idle) {
            *sent_idle = true;
            chain.broadcast(Message::Idle)?;
        }
        return Ok(());
    }
    let min = active.into_iter().min().unwrap_or(MIN_WATERMARK);
    if min > *current || *sent_idle {
        *sent_idle = false;
        *current = (*current).max(min);
        chain.watermark(*current)?;
    }
    Ok(())
}
