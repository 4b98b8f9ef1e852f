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

use crate::coordinator::state_file_name;
use crate::error::{Result, RuntimeError};
use crate::exchange::{Partitioning, split_by_key};
use crate::message::{Control, Event, Message};
use crate::metrics::Metrics;
use crate::operator::{Operator, Source, SourcePoll, TaskContext, WatermarkStatus, write_error};
use arrow::array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TryRecvError};
use keel_state::{CheckpointStore, ManifestFile};
use keel_types::time::{MAX_WATERMARK, MIN_WATERMARK};
use std::io::Write;
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
    /// A batch from input `side` of a two-input stage into the first operator.
    fn push_side(&mut self, side: usize, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if side == 0 || self.ops.is_empty() {
            return self.push(0, batch);
        }
        let mut out = Vec::new();
        self.ops[0].1.process_side(side, batch, &mut out)?;
        self.pass_on(0, out)
    }

    /// Pushes `out`, the output of operator `from`, to the rest of the chain, then each further
    /// piece of it the operator has (`Operator::more_output`).
    fn pass_on(&mut self, from: usize, mut out: Vec<RecordBatch>) -> Result<()> {
        loop {
            for b in out.drain(..) {
                self.push(from + 1, b)?;
            }
            if !self.ops[from].1.more_output(&mut out)? {
                return Ok(());
            }
        }
    }

    fn push(&mut self, from: usize, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if from == self.ops.len() {
            return self.emit(batch);
        }
        let mut out = Vec::new();
        self.ops[from].1.process(batch, &mut out)?;
        self.pass_on(from, out)
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

    /// Lets operators act on the wall clock, at most every `TIMER_INTERVAL`.
    fn timer(&mut self, last: &mut std::time::Instant) -> Result<()> {
        if last.elapsed() < TIMER_INTERVAL {
            return Ok(());
        }
        *last = std::time::Instant::now();
        let now = keel_types::time::now_ms();
        for i in 0..self.ops.len() {
            let mut out = Vec::new();
            self.ops[i].1.on_processing_time(now, &mut out)?;
            for b in out {
                self.push(i + 1, b)?;
            }
        }
        Ok(())
    }

    /// Writes every operator's state file of checkpoint `checkpoint`; the files go to `out`.
    fn snapshot(&mut self, checkpoint: u64, store: &CheckpointStore, out: &mut Vec<ManifestFile>) -> Result<()> {
        for (uid, op) in &mut self.ops {
            let mut file = store.state_file(checkpoint, &state_file_name(uid, self.ctx.subtask));
            op.snapshot_into(checkpoint, &mut file)?;
            out.extend(file.finish()?);
        }
        Ok(())
    }

    /// The source's state file, then the chain's: every state file of this source task.
    fn snapshot_source(
        &mut self,
        source: &mut dyn Source,
        uid: &str,
        n: u64,
        store: &CheckpointStore,
    ) -> Result<Vec<ManifestFile>> {
        let mut file = store.state_file(n, &state_file_name(uid, self.ctx.subtask));
        let bytes = source.snapshot(n)?;
        file.write_all(&bytes).map_err(|e| write_error(&file, e))?;
        let mut files: Vec<ManifestFile> = file.finish()?.into_iter().collect();
        self.snapshot(n, store, &mut files)?;
        Ok(files)
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

/// What every task shares: its identity, its line to the coordinator, and where it writes its
/// operators' state files.
pub(crate) struct TaskLink {
    pub task: usize,
    pub control: Receiver<Control>,
    pub events: Sender<Event>,
    pub store: CheckpointStore,
}

impl TaskLink {
    fn ack(&self, checkpoint: u64, files: Vec<ManifestFile>) {
        let _ = self.events.send(Event::Ack { task: self.task, checkpoint, files });
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
/// How often operators hear the wall clock (processing-time windows).
const TIMER_INTERVAL: Duration = Duration::from_millis(50);

/// Runs a source subtask until shutdown.
pub(crate) fn run_source_task(uid: &str, mut source: Box<dyn Source>, mut chain: Chain, link: TaskLink) -> Result<()> {
    let mut exhausted = false;
    let mut last_wm = MIN_WATERMARK;
    let mut idle = false;
    let mut early: Option<Control> = None;
    let mut last_timer = std::time::Instant::now();
    loop {
        chain.timer(&mut last_timer)?;
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
                    let files = chain.snapshot_source(source.as_mut(), uid, n, &link.store)?;
                    link.ack(n, files);
                    chain.broadcast(Message::Barrier(n))?;
                }
                Control::Finish { checkpoint, drain } => {
                    if drain {
                        chain.watermark(MAX_WATERMARK)?;
                    }
                    let files = chain.snapshot_source(source.as_mut(), uid, checkpoint, &link.store)?;
                    link.ack(checkpoint, files);
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
            WatermarkStatus::Idle(wm) if !idle => {
                if wm > last_wm {
                    last_wm = wm;
                    chain.watermark(last_wm)?;
                }
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
pub(crate) fn run_input_task(inputs: Vec<(usize, Receiver<Message>)>, mut chain: Chain, link: TaskLink) -> Result<()> {
    let mut st = vec![InputState { wm: MIN_WATERMARK, idle: false, ended: false, blocked: false }; inputs.len()];
    let mut current_wm = MIN_WATERMARK;
    let mut sent_idle = false;
    let mut barrier: Option<u64> = None;
    let mut last_timer = std::time::Instant::now();
    loop {
        chain.timer(&mut last_timer)?;
        let mut sel = Select::new();
        let ctrl = sel.recv(&link.control);
        let mut map = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            if !st[i].ended && !st[i].blocked {
                map.push(i);
                sel.recv(&input.1);
            }
        }
        let Ok(oper) = sel.select_timeout(TIMER_INTERVAL) else { continue };
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
        let msg = oper.recv(&inputs[i].1).map_err(|_| RuntimeError::Cancelled("an upstream task stopped".into()))?;
        match msg {
            Message::Data(batch) => chain.push_side(inputs[i].0, batch)?,
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
            let mut files = vec![];
            chain.snapshot(n, &link.store, &mut files)?;
            link.ack(n, files);
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

/// The watermark of a task's inputs: the minimum over inputs neither idle nor ended.
#[derive(Debug, PartialEq, Eq)]
enum Combined {
    Active(i64),
    /// Every input that has not ended is idle (and at least one is).
    Idle,
    /// Every input ended.
    Ended,
}

fn combine(st: &[InputState]) -> Combined {
    let min = st.iter().filter(|s| !s.ended && !s.idle).map(|s| s.wm).min();
    match min {
        Some(m) => Combined::Active(m),
        None if st.iter().any(|s| s.idle && !s.ended) => Combined::Idle,
        None => Combined::Ended,
    }
}

fn advance_watermark(st: &[InputState], current: &mut i64, sent_idle: &mut bool, chain: &mut Chain) -> Result<()> {
    match combine(st) {
        Combined::Idle if !*sent_idle => {
            *sent_idle = true;
            chain.broadcast(Message::Idle)
        }
        Combined::Active(min) if min > *current || *sent_idle => {
            *sent_idle = false;
            *current = (*current).max(min);
            chain.watermark(*current)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Operator;
    use arrow::array::{Int64Array, RecordBatch};
    use crossbeam_channel::{bounded, unbounded};
    use std::sync::{Arc, Mutex};

    /// Records what the chain saw, in order.
    #[derive(Default, Clone)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    struct Recorder(Seen);
    impl Operator for Recorder {
        fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
            let v = batch.column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0)).unwrap_or(-1);
            self.0.0.lock().unwrap().push(format!("data {v}"));
            out.push(batch);
            Ok(())
        }
        fn on_watermark(&mut self, wm: i64, _out: &mut Vec<RecordBatch>) -> Result<()> {
            self.0.0.lock().unwrap().push(format!("wm {wm}"));
            Ok(())
        }
        fn snapshot(&mut self, n: u64) -> Result<Option<Vec<u8>>> {
            self.0.0.lock().unwrap().push(format!("snapshot {n}"));
            Ok(None)
        }
    }

    fn data(v: i64) -> Message {
        Message::Data(RecordBatch::try_from_iter(vec![("v", Arc::new(Int64Array::from(vec![v])) as _)]).unwrap())
    }

    fn ctx() -> TaskContext {
        TaskContext::for_test(0, 1)
    }

    /// Runs an input task over two inputs fed with `a` and `b` (all sent before it starts).
    fn run(a: Vec<Message>, b: Vec<Message>) -> (Vec<String>, Vec<Message>, Vec<Event>) {
        let seen = Seen::default();
        let (ta, ra) = bounded(100);
        let (tb, rb) = bounded(100);
        for m in a {
            ta.send(m).unwrap();
        }
        for m in b {
            tb.send(m).unwrap();
        }
        let (out_tx, out_rx) = unbounded();
        let (ctl_tx, ctl_rx) = unbounded();
        let (ev_tx, ev_rx) = unbounded();
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 1).unwrap();
        let chain = Chain {
            ops: vec![("rec".into(), Box::new(Recorder(seen.clone())))],
            outputs: vec![OutputEdge { partitioning: Partitioning::Forward, senders: vec![out_tx], next: 0 }],
            ctx: ctx(),
            subtask: 0,
            is_last_stage: false,
        };
        let handle = std::thread::spawn(move || {
            run_input_task(vec![(0, ra), (0, rb)], chain, TaskLink { task: 0, control: ctl_rx, events: ev_tx, store })
        });
        let mut events = vec![];
        // The task reports TaskEnded once every input ended; then it waits for shutdown.
        for e in ev_rx.iter() {
            let ended = matches!(e, Event::TaskEnded { .. });
            events.push(e);
            if ended {
                break;
            }
        }
        ctl_tx.send(Control::Shutdown).unwrap();
        handle.join().unwrap().unwrap();
        let seen = seen.0.lock().unwrap().clone();
        (seen, out_rx.try_iter().collect(), events)
    }

    #[test]
    fn barriers_align_before_the_snapshot_and_later_data_waits() {
        // Input a delivers barrier 1 early; its later data must not be processed before b's
        // barrier arrives, so the snapshot holds exactly the pre-barrier data of both.
        let a = vec![data(1), Message::Barrier(1), data(3), Message::End];
        let b = vec![data(2), Message::Barrier(1), Message::End];
        let (seen, out, events) = run(a, b);
        let snap = seen.iter().position(|s| s == "snapshot 1").unwrap();
        assert!(seen[..snap].contains(&"data 1".to_string()) && seen[..snap].contains(&"data 2".to_string()));
        assert_eq!(seen[snap + 1..], ["data 3".to_string()]);
        assert!(events.iter().any(|e| matches!(e, Event::Ack { checkpoint: 1, .. })));
        let barrier_at = out.iter().position(|m| matches!(m, Message::Barrier(1))).unwrap();
        let data3_at = out.iter().position(|m| matches!(m, Message::Data(b) if b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0) == 3)).unwrap();
        assert!(barrier_at < data3_at, "the barrier must be forwarded before post-barrier data");
        assert!(matches!(out.last(), Some(Message::End)));
    }

    #[test]
    fn the_watermark_is_the_minimum_of_active_inputs_and_never_goes_back() {
        let a = vec![Message::Watermark(10), Message::Watermark(30), Message::End];
        let b = vec![Message::Watermark(20), Message::Idle, Message::Watermark(5), Message::End];
        let (seen, _, _) = run(a, b);
        let wms: Vec<i64> = seen.iter().filter_map(|s| s.strip_prefix("wm ").map(|w| w.parse().unwrap())).collect();
        // Whatever the interleaving, the sequence never decreases, and never exceeds the
        // minimum of what both inputs had announced while both were active.
        assert!(wms.windows(2).all(|w| w[0] <= w[1]), "{wms:?}");
        assert!(wms.iter().all(|&w| w <= 30), "{wms:?}");
        assert!(wms.contains(&10) || wms.contains(&20), "{wms:?}");
    }

    #[test]
    fn idle_and_ended_inputs_do_not_hold_the_watermark_back() {
        let st = |wm, idle, ended| InputState { wm, idle, ended, blocked: false };
        assert_eq!(combine(&[st(100, false, false), st(5, true, false)]), Combined::Active(100));
        assert_eq!(combine(&[st(100, false, false), st(5, false, false)]), Combined::Active(5));
        assert_eq!(combine(&[st(100, false, true), st(7, false, false)]), Combined::Active(7));
        assert_eq!(combine(&[st(100, true, false), st(7, true, false)]), Combined::Idle);
        assert_eq!(combine(&[st(100, false, true), st(7, false, true)]), Combined::Ended);
    }
}
