//! Running a job: starting one attempt (restoring the checkpoint recovery chose into fresh
//! tasks), and the restart strategy around attempts. The job's directory and identity are in
//! `job_dir.rs`.
//!
//! Invariants: a job never restores a checkpoint taken by a different pipeline, nor one older
//! than its committed output without the operator's choice (`keel_state::Choice`); after a
//! failure every task of the attempt has exited before the next attempt starts; a failure that
//! restarting cannot fix (a user error, damaged data) is not retried.

use crate::coordinator::{Coordinator, JobOutcome, TaskInfo, state_file_name};
use crate::error::{Result, RuntimeError};
use crate::graph::{JobGraph, StageInput};
use crate::job_dir::JobDir;
use crate::message::{Event, Message};
use crate::metrics::Metrics;
use crate::operator::{RestoredState, TaskContext};
use crate::task::{Chain, OutputEdge, TaskLink, run_input_task, run_source_task};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use keel_state::{Choice, CompletedCheckpoint};
use keel_types::ErrorClass;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often and how fast a failed job restarts.
#[derive(Debug, Clone)]
pub struct RestartStrategy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// At most this many restarts within `window`; one more fails the job.
    pub max_attempts: u32,
    pub window: Duration,
}

impl Default for RestartStrategy {
    fn default() -> Self {
        RestartStrategy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_attempts: 10,
            window: Duration::from_secs(600),
        }
    }
}

/// Everything about how to run a job except its graph.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// `None` disables periodic checkpoints (the final one on stop or end still happens).
    pub checkpoint_interval: Option<Duration>,
    pub checkpoint_timeout: Duration,
    pub retained_checkpoints: usize,
    /// Sources stop at their recorded end and the job finishes.
    pub bounded: bool,
    pub key_groups: u32,
    pub restart: RestartStrategy,
    /// Batches buffered per edge: bounds memory, and makes a slow consumer slow its producers.
    pub channel_capacity: usize,
    /// Each checkpoint gets a parity file, from which any one damaged state file is rebuilt.
    pub checkpoint_parity: bool,
}

impl JobConfig {
    pub fn new(name: &str, data_dir: &Path) -> Self {
        JobConfig {
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            checkpoint_interval: Some(Duration::from_secs(1)),
            checkpoint_timeout: Duration::from_secs(60),
            retained_checkpoints: 3,
            bounded: false,
            key_groups: keel_types::DEFAULT_KEY_GROUPS,
            restart: RestartStrategy::default(),
            channel_capacity: 8,
            checkpoint_parity: true,
        }
    }
}

/// Runs a job to its end under the restart strategy. `stop` requests a graceful stop.
pub fn run_job(
    graph: &JobGraph,
    config: &JobConfig,
    job: &JobDir,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<JobOutcome> {
    graph.validate()?;
    let mut failures: VecDeque<Instant> = VecDeque::new();
    let mut backoff = config.restart.initial_backoff;
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        match run_attempt(graph, config, job, &metrics, &stop, attempt) {
            Ok(outcome) => return Ok(outcome),
            Err(e) if !e.class().restart_can_help() => {
                let message = format!("{e} (not restarting: restarting cannot fix this)");
                return Err(match e.class() {
                    ErrorClass::Damaged => RuntimeError::Damaged(message),
                    _ => RuntimeError::User(message),
                });
            }
            Err(e) => {
                if started.elapsed() > config.restart.window {
                    backoff = config.restart.initial_backoff;
                }
                let now = Instant::now();
                failures.push_back(now);
                while failures.front().is_some_and(|t| now.duration_since(*t) > config.restart.window) {
                    failures.pop_front();
                }
                if failures.len() > config.restart.max_attempts as usize {
                    return Err(RuntimeError::External(format!(
                        "job '{}' failed {} times within {:?} and is giving up; last cause: {e}",
                        config.name,
                        failures.len(),
                        config.restart.window
                    )));
                }
                attempt += 1;
                Metrics::add(&metrics.restarts, 1);
                tracing::warn!(
                    "job '{}' failed: {e}; restart {attempt} (at most {} within {:?}) in {:?} from its newest checkpoint",
                    config.name,
                    config.restart.max_attempts,
                    config.restart.window,
                    backoff,
                );
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if stop.load(Ordering::Relaxed) {
                        return Err(RuntimeError::External(format!("stopped while waiting to restart after: {e}")));
                    }
                    std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
                }
                backoff = (backoff * 2).min(config.restart.max_backoff);
            }
        }
    }
}

/// Refuses a checkpoint that holds state for an operator the graph no longer has: restoring
/// without it would silently lose that state (a plan that changed, through the pipeline or a
/// Keel version that plans it differently, names its stateful operators differently).
fn check_state_claimed(chk: &CompletedCheckpoint, graph: &JobGraph) -> Result<()> {
    let uids: std::collections::HashSet<String> = graph.operator_parallelism().into_iter().map(|(u, _)| u).collect();
    let Some(old) = chk.manifest.meta.get("operators").and_then(|o| o.as_object()) else { return Ok(()) };
    for (uid, p) in old {
        if uids.contains(uid) {
            continue;
        }
        if (0..p.as_u64().unwrap_or(0) as u32).any(|i| has_state(chk, uid, i)) {
            return Err(RuntimeError::User(format!(
                "checkpoint {} holds the state of operator '{uid}', which this job's plan no longer has (the \
                 pipeline, or how this Keel version plans it, changed); restoring without it would lose that \
                 state. Start the job over with --fresh",
                chk.id
            )));
        }
    }
    Ok(())
}

/// Whether `chk` holds a state file of operator `uid`'s subtask `subtask`.
fn has_state(chk: &CompletedCheckpoint, uid: &str, subtask: u32) -> bool {
    let name = state_file_name(uid, subtask);
    chk.names().any(|n| n == name)
}

/// The state restored for one operator uid in one subtask.
fn restored_for(chk: Option<&CompletedCheckpoint>, uid: &str, subtask: u32, parallelism: u32) -> Result<RestoredState> {
    let Some(chk) = chk else { return Ok(RestoredState::default()) };
    let old_p =
        chk.manifest.meta.get("operators").and_then(|o| o.get(uid)).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    let mut parts = Vec::with_capacity(old_p as usize);
    for i in 0..old_p {
        parts.push(if has_state(chk, uid, i) { chk.read(&state_file_name(uid, i))? } else { Vec::new() });
    }
    let inherited = (0..old_p as usize).filter(|i| *i as u32 % parallelism == subtask).collect();
    Ok(RestoredState { parts, inherited, checkpoint: Some(chk.id) })
}

fn run_attempt(
    graph: &JobGraph,
    config: &JobConfig,
    job: &JobDir,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
    attempt: u32,
) -> Result<JobOutcome> {
    let store = job.checkpoint_store(config.retained_checkpoints)?.with_parity(config.checkpoint_parity);
    let recovery = store.recover(Choice::Newest)?;
    for note in &recovery.notes {
        tracing::warn!("job '{}': {note}", config.name);
    }
    let restored = recovery.checkpoint;
    if let Some(c) = &restored {
        check_state_claimed(c, graph)?;
    }
    // Every task of an earlier attempt has exited: the directories of checkpoints it never
    // completed are written by nobody now.
    store.discard_incomplete_before(recovery.next_id)?;
    let next_id = recovery.next_id;
    match &restored {
        Some(c) => tracing::info!("job '{}': restoring checkpoint {}", config.name, c.id),
        None => tracing::info!("job '{}': starting from the beginning (no checkpoint)", config.name),
    }
    let (events_tx, events_rx) = unbounded::<Event>();

    // Edges: receivers[stage][subtask] = inputs of that subtask; senders per upstream subtask.
    let n = graph.stages.len();
    // inputs[stage][subtask]: (input side, receiver) per upstream subtask.
    type Inputs = Vec<(usize, Receiver<Message>)>;
    let mut inputs: Vec<Vec<Inputs>> =
        graph.stages.iter().map(|s| (0..s.parallelism).map(|_| Vec::new()).collect()).collect();
    let mut outputs: Vec<Vec<Vec<OutputEdge>>> =
        graph.stages.iter().map(|s| (0..s.parallelism).map(|_| Vec::new()).collect()).collect();
    for (si, stage) in graph.stages.iter().enumerate() {
        for (side, (up, partitioning)) in stage.input.upstreams().into_iter().enumerate() {
            let up_p = graph.stages[up].parallelism as usize;
            let mut senders: Vec<Vec<Sender<Message>>> = vec![Vec::new(); up_p];
            for subtask_inputs in inputs[si].iter_mut() {
                for s in senders.iter_mut() {
                    let (tx, rx) = bounded(config.channel_capacity);
                    s.push(tx);
                    subtask_inputs.push((side, rx));
                }
            }
            for (i, s) in senders.into_iter().enumerate() {
                outputs[up][i].push(OutputEdge { partitioning: partitioning.clone(), senders: s, next: i });
            }
        }
    }

    let mut tasks = Vec::new();
    let mut handles = Vec::new();
    for (si, stage) in graph.stages.iter().enumerate().rev() {
        for sub in (0..stage.parallelism).rev() {
            let task = tasks.len();
            let (ctl_tx, ctl_rx) = unbounded();
            let name = format!("{}[{}/{}]", stage.name, sub + 1, stage.parallelism);
            tasks.push(TaskInfo {
                name: name.clone(),
                is_source: matches!(stage.input, StageInput::Source { .. }),
                control: ctl_tx,
            });
            let ctx = TaskContext {
                job: config.name.clone(),
                stage: stage.name.clone(),
                subtask: sub,
                parallelism: stage.parallelism,
                key_groups: config.key_groups,
                data_dir: config.data_dir.clone(),
                job_dir: job.dir.clone(),
                run_id: job.file.run_id.clone(),
                attempt,
                metrics: metrics.clone(),
            };
            let my_inputs = std::mem::take(&mut inputs[si][sub as usize]);
            let my_outputs = std::mem::take(&mut outputs[si][sub as usize]);
            let link = TaskLink { task, control: ctl_rx, events: events_tx.clone(), store: store.clone() };
            let stage = stage.clone();
            let chk = restored.clone();
            let is_last_stage = si == n - 1;
            let thread_name = name.clone();
            let body = move || -> Result<()> {
                let mut ops = Vec::new();
                for op in &stage.chain {
                    let mut o = (op.factory)(&ctx)?;
                    o.open(&ctx, restored_for(chk.as_ref(), &op.uid, ctx.subtask, ctx.parallelism)?)?;
                    ops.push((op.uid.clone(), o));
                }
                let subtask = ctx.subtask as usize;
                let chain = Chain { ops, outputs: my_outputs, ctx: ctx.clone(), subtask, is_last_stage };
                match &stage.input {
                    StageInput::Source { uid, factory } => {
                        let mut src = factory(&ctx)?;
                        src.open(&ctx, restored_for(chk.as_ref(), uid, ctx.subtask, ctx.parallelism)?)?;
                        run_source_task(uid, src, chain, link)
                    }
                    StageInput::Upstream { .. } | StageInput::TwoInputs { .. } => {
                        run_input_task(my_inputs, chain, link)
                    }
                }
            };
            let events = events_tx.clone();
            let handle = std::thread::Builder::new()
                .name(thread_name.clone())
                .spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                    let error = match result {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e,
                        Err(panic) => RuntimeError::Panic { task: thread_name, message: panic_message(&panic) },
                    };
                    let _ = events.send(Event::TaskFailed { task, error });
                })
                .map_err(|e| RuntimeError::External(format!("cannot start a task thread: {e}")))?;
            handles.push(handle);
        }
    }
    drop(events_tx);
    let mut operators = serde_json::Map::new();
    for (uid, p) in graph.operator_parallelism() {
        operators.insert(uid, p.into());
    }
    let coordinator = Coordinator {
        tasks,
        events: events_rx,
        store,
        interval: config.checkpoint_interval,
        timeout: config.checkpoint_timeout,
        next_id,
        bounded: config.bounded,
        stop: stop.clone(),
        metrics: metrics.clone(),
        meta: serde_json::json!({ "run_id": job.file.run_id, "operators": operators }),
    };
    let result = coordinator.run();
    // The coordinator (and with it every control sender) is gone: tasks that are still running
    // see their control channel close, stop, and drop their edges, which stops the rest.
    for h in handles {
        let _ = h.join();
    }
    result
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{OperatorSpec, StageInput, StageSpec};

    fn graph(ops: &[&str]) -> JobGraph {
        let source: crate::operator::SourceFactory =
            Arc::new(|_: &TaskContext| Err(RuntimeError::Internal("not started in this test".into())));
        let op: crate::operator::OperatorFactory =
            Arc::new(|_: &TaskContext| Err(RuntimeError::Internal("not started in this test".into())));
        let chain = ops.iter().map(|u| OperatorSpec { uid: u.to_string(), factory: op.clone() }).collect();
        let stage = StageSpec {
            name: "s".into(),
            parallelism: 1,
            input: StageInput::Source { uid: "source".into(), factory: source },
            chain,
        };
        JobGraph { stages: vec![stage] }
    }

    #[test]
    fn state_of_an_operator_the_plan_lost_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = keel_state::CheckpointStore::open(dir.path(), 3).unwrap();
        let mut w = store.writer(1).unwrap();
        // Operator "agg" had state in two subtasks; "project" had none.
        w.put(&state_file_name("agg", 1), b"state").unwrap();
        let operators = serde_json::json!({ "source": 1, "agg": 2, "project": 2 });
        w.commit(serde_json::json!({ "operators": operators })).unwrap();
        let chk = store.latest().unwrap().unwrap();
        assert!(check_state_claimed(&chk, &graph(&["agg", "project"])).is_ok());
        assert!(check_state_claimed(&chk, &graph(&["agg"])).is_ok(), "a stateless operator may go");
        let err = check_state_claimed(&chk, &graph(&["agg-2", "project"])).unwrap_err();
        assert_eq!(err.class(), ErrorClass::User);
        assert!(err.to_string().contains("operator 'agg'") && err.to_string().contains("--fresh"), "{err}");
    }
}
