//! One pipeline of `keel bench chaos`, round by round: a producer thread appends the seeded
//! events to the input topics while child `keel run` processes run the pipeline; each round's
//! child is SIGKILLed (after a seeded delay, or by a `KEEL_FAULTS` fault point) and the next
//! round restarts it; after the last kill, once every event is written, a `--bounded` run
//! finishes the job and its committed output is read back and compared.
//!
//! Invariants:
//! - the producer appends events strictly in index order, one chunk at a time across all
//!   partitions (the no-late-rows argument of `pipelines.rs` rests on it), and only up to the
//!   allowance the current round gives it, so events keep arriving over all data rounds;
//! - a killed round must end by SIGKILL: a child that exits by itself with an error fails the
//!   pipeline with its output; only a `--bounded` round (run once every event is written, so
//!   the end offsets it records are the final ones) may finish by itself;
//! - the output is read only after the final run finished: committed topic records (readers never
//!   see uncommitted transactions) or published files; hidden files (in progress, pending) are
//!   never read, and any left after the job finished is reported;
//! - waiting is always polling for a condition with a deadline, never a sleep taken as proof.

use super::compare::{self, Verdict};
use super::pipelines::{Gen, Output, Pipeline};
use anyhow::{Context, Result, bail};
use keel::sample::mix;
use keel_log::{Durability, Log, Record, TopicConfig};
use serde_json::Value;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A fault point not reached within this long falls back to a timed kill.
const FAULT_WAIT: Duration = Duration::from_secs(4);
/// Timed kills land this long after the child started, drawn uniformly.
const TIMED_KILL_MS: std::ops::Range<u64> = 10..1_500;
/// The same for a bounded round, which has little left to do: most of its kills are to land
/// while it drains and finishes, not after.
const BOUNDED_KILL_MS: std::ops::Range<u64> = 1..150;
/// A bounded round's fault point fires at one of its first hits (a bounded run takes few
/// checkpoints).
const BOUNDED_MOST_HITS: u64 = 2;
/// How long the final run and the producer may take before the benchmark gives up.
const FINISH_DEADLINE: Duration = Duration::from_secs(900);

/// The seeded decisions (splitmix64 over a counter).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0, 0xc4a0_5eed) % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What one pipeline's chaos run is asked to do.
pub struct Plan {
    pub kills: u32,
    pub events: u64,
    pub seed: u64,
    pub parallelism: Vec<u32>,
    pub intervals: Vec<String>,
}

/// What one pipeline's chaos run did and found.
#[derive(Default)]
pub struct Outcome {
    pub kills: u32,
    pub fault_kills: u32,
    /// Runs that resumed from a checkpoint a killed run left.
    pub restarts: u32,
    /// Bounded rounds that finished before their kill.
    pub finished_early: u32,
    pub verdict: Verdict,
    /// Records of the job's dead-letter topic (late or bad rows; there must be none).
    pub dead_letters: Vec<String>,
    /// Hidden files left in the sink's directory after the job finished.
    pub leftovers: Vec<String>,
    /// Restarts inside a child (a task failed) and their causes, from the children's logs.
    pub task_failures: Vec<String>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.verdict.ok() && self.dead_letters.is_empty() && self.leftovers.is_empty()
    }
}

/// The producer thread: appends events `0..n` in chunks, up to `allowance`.
struct Producer {
    allowance: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Producer {
    fn start(data: &Path, pipeline: Pipeline, g: Gen, chunk: u64, pace: Duration) -> Result<Producer> {
        let log = Log::open(data).with_context(|| format!("opening the log in {}", data.display()))?;
        let mut writers = vec![];
        for input in pipeline.inputs() {
            let topic = log.topic(input.topic).with_context(|| format!("opening input topic {}", input.topic))?;
            let ws = (0..input.partitions)
                .map(|p| topic.writer(p, Durability::OsBuffer))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("opening writers of input topic {}", input.topic))?;
            writers.push(ws);
        }
        let allowance = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, w, s) = (allowance.clone(), written.clone(), stop.clone());
        let handle = std::thread::spawn(move || -> Result<()> {
            let mut next = 0u64;
            while next < g.events && !s.load(Ordering::SeqCst) {
                let allowed = a.load(Ordering::SeqCst).min(g.events);
                if next >= allowed {
                    // Waiting for the next round's allowance.
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                let end = (next + chunk).min(allowed);
                let mut batches: Vec<Vec<Vec<Record>>> =
                    writers.iter().map(|ws| (0..ws.len()).map(|_| vec![]).collect()).collect();
                for i in next..end {
                    let (input, line) = pipeline.event(g, i);
                    let parts = batches[input].len() as u64;
                    batches[input][(i % parts) as usize].push(Record::new(None, line.into_bytes()));
                }
                for (input, parts) in batches.iter().enumerate() {
                    for (p, records) in parts.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                        writers[input][p].append(records).with_context(|| {
                            format!("appending events to input {} partition {p}", pipeline.inputs()[input].topic)
                        })?;
                    }
                }
                next = end;
                w.store(next, Ordering::SeqCst);
                // The pace spreads a round's events over its run.
                std::thread::sleep(pace);
            }
            Ok(())
        });
        Ok(Producer { allowance, written, stop, handle: Some(handle) })
    }

    /// Waits until every event is written (or the producer failed).
    fn finish(&mut self, events: u64) -> Result<()> {
        self.allowance.store(events, Ordering::SeqCst);
        let deadline = Instant::now() + FINISH_DEADLINE;
        while self.written.load(Ordering::SeqCst) < events {
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the producer wrote {} of {events} events in {FINISH_DEADLINE:?}",
                    self.written.load(Ordering::SeqCst)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => bail!("the producer thread panicked"),
            None => {}
        }
        let written = self.written.load(Ordering::SeqCst);
        anyhow::ensure!(written == events, "the producer stopped after {written} of {events} events");
        Ok(())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// How a round's child is to be killed.
enum Kill {
    /// SIGKILL this long after the start.
    Timed(Duration),
    /// `KEEL_FAULTS=point=kill@n`: the child kills itself at the n-th hit of the point.
    Fault(&'static str, u64),
    /// `KEEL_FAULTS=point=panic@n`: a task panics at the n-th hit, the job restarts inside the
    /// child from its newest checkpoint, and the child is SIGKILLed this long after that restart
    /// is logged.
    Panic(&'static str, u64, Duration),
}

/// What the runtime logs when it restarts a failed job inside the process.
const RESTART_LOGGED: &str = "from its newest checkpoint";

/// One child `keel run`.
struct Child<'a> {
    exe: &'a Path,
    data: &'a Path,
    sql: &'a Path,
    log: &'a Path,
}

/// How a round ended.
enum Ended {
    Killed { how: String, by_fault: bool },
    Finished,
}

/// What a child wrote to its log: the text since `from`.
fn log_since(path: &Path, from: u64) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening child log {}", path.display()))?;
    f.seek(SeekFrom::Start(from)).with_context(|| format!("reading child log {}", path.display()))?;
    let mut text = String::new();
    f.read_to_string(&mut text).with_context(|| format!("reading child log {}", path.display()))?;
    Ok(text)
}

/// The last lines of a child's output, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Child<'_> {
    /// Runs the child until it is killed or, if allowed, finishes; returns how it ended and its
    /// output.
    fn run(&self, p: u32, interval: &str, bounded: bool, kill: Option<Kill>) -> Result<(Ended, String)> {
        let from = std::fs::metadata(self.log).map(|m| m.len()).unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log)
            .with_context(|| format!("opening child log {}", self.log.display()))?;
        let mut cmd = Command::new(self.exe);
        cmd.arg("--data-dir")
            .arg(self.data)
            .arg("run")
            .arg(self.sql)
            .args(["--quiet", "--checkpoint-interval", interval, "-p", &p.to_string()])
            .env("KEEL_LOG", "warn")
            .env_remove("KEEL_FAULTS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if bounded {
            cmd.arg("--bounded");
        }
        let mut fallback = None;
        let mut deadline = match &kill {
            Some(Kill::Timed(d)) => *d,
            Some(Kill::Fault(point, n)) => {
                cmd.env("KEEL_FAULTS", format!("{point}=kill@{n}"));
                fallback = Some(format!("fault {point}@{n} not reached in {}s: timed", FAULT_WAIT.as_secs()));
                FAULT_WAIT
            }
            Some(Kill::Panic(point, n, _)) => {
                cmd.env("KEEL_FAULTS", format!("{point}=panic@{n}"));
                FAULT_WAIT
            }
            None => FINISH_DEADLINE,
        };
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {} run", self.exe.display()))?;
        let mut restarted_at = None;
        let mut polls = 0u64;
        let (status, we_killed) = loop {
            if let Some(s) = child.try_wait().context("waiting for keel run")? {
                break (s, false);
            }
            polls += 1;
            if let Some(Kill::Panic(_, _, after)) = &kill
                && restarted_at.is_none()
                && polls.is_multiple_of(10)
                && log_since(self.log, from)?.contains(RESTART_LOGGED)
            {
                restarted_at = Some(started.elapsed());
                deadline = started.elapsed() + *after;
            }
            if started.elapsed() >= deadline {
                child.kill().context("killing keel run")?;
                break (child.wait().context("waiting for the killed keel run")?, true);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let text = log_since(self.log, from)?;
        if status.signal() == Some(libc::SIGKILL) {
            let ms = started.elapsed().as_millis();
            let (how, by_fault) = match (&kill, we_killed) {
                (Some(Kill::Fault(point, n)), false) => (format!("fault {point}@{n} after {ms} ms"), true),
                (Some(Kill::Fault(..)), true) => (fallback.unwrap_or_default(), false),
                (Some(Kill::Timed(_)), _) => (format!("timed at {ms} ms"), false),
                (Some(Kill::Panic(point, n, _)), _) => match restarted_at {
                    Some(r) => (
                        format!(
                            "timed at {ms} ms, {} ms after a panic at {point}@{n} restarted the job inside",
                            r.as_millis()
                        ),
                        false,
                    ),
                    None => (format!("panic {point}@{n} not reached in {}s: timed", FAULT_WAIT.as_secs()), false),
                },
                (None, _) => bail!("keel run did not finish within {FINISH_DEADLINE:?}:\n{}", tail(&text)),
            };
            return Ok((Ended::Killed { how, by_fault }, text));
        }
        if status.success() && bounded {
            return Ok((Ended::Finished, text));
        }
        bail!("keel run exited by itself ({status}) where it was to be killed or to finish:\n{}", tail(&text))
    }
}

/// The checkpoint a run resumed from, from its first line.
fn resumed_from(text: &str) -> Option<u64> {
    let at = text.find("resuming from checkpoint ")? + "resuming from checkpoint ".len();
    text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Runs one pipeline through its kills and the final run, then compares its output.
pub fn run(exe: &Path, dir: &Path, pipeline: Pipeline, plan: &Plan, progress: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let started = Instant::now();
    let g = Gen { seed: plan.seed, events: plan.events };
    let mut rng = Rng::new(mix(plan.seed, 0x0c0f_fee0));
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = Log::open(dir).with_context(|| format!("opening the log in {}", dir.display()))?;
    for input in pipeline.inputs() {
        log.create_topic(input.topic, TopicConfig::new(input.partitions))
            .with_context(|| format!("creating input topic {}", input.topic))?;
    }
    if let Output::Topic { topic, partitions, .. } = pipeline.output() {
        log.create_topic(topic, TopicConfig::new(partitions))
            .with_context(|| format!("creating sink topic {topic}"))?;
    }
    let out_dir = dir.join("out");
    let sql = dir.join(format!("{}.sql", pipeline.job()));
    std::fs::write(&sql, pipeline.sql(&out_dir)).with_context(|| format!("writing {}", sql.display()))?;
    let child_log = dir.join("runs.log");
    let child = Child { exe, data: dir, sql: &sql, log: &child_log };

    // Events arrive over the first three quarters of the rounds; the others run once every event
    // is written and may be bounded (killed while draining or finishing).
    let data_rounds = (u64::from(plan.kills) * 3).div_ceil(4).max(1);
    let per_round = plan.events.div_ceil(data_rounds);
    let mut producer = Producer::start(dir, pipeline, g, (per_round / 16).max(1), Duration::from_millis(15))?;
    let points = pipeline.fault_points();
    let mut out = Outcome::default();
    let mut round = 0u64;
    let mut all_written = false;
    while out.kills < plan.kills {
        round += 1;
        let data_round = round <= data_rounds;
        if data_round {
            producer.allowance.store(plan.events * round / data_rounds, Ordering::SeqCst);
        } else if !all_written {
            producer.finish(plan.events)?;
            all_written = true;
        }
        let bounded = !data_round && rng.below(2) == 0;
        let p = *rng.pick(&plan.parallelism);
        let interval = rng.pick(&plan.intervals).clone();
        // A third are timed kills, a sixth panic a task first, half kill at a fault point.
        let range = if bounded { BOUNDED_KILL_MS } else { TIMED_KILL_MS };
        let timed = Duration::from_millis(range.start + rng.below(range.end - range.start));
        let hit = |rng: &mut Rng, most: u64| 1 + rng.below(if bounded { most.min(BOUNDED_MOST_HITS) } else { most });
        let kill = match rng.below(6) {
            0 | 1 => Kill::Timed(timed),
            2 => {
                // Only a task's panic is restarted inside the process; the checkpoint points are
                // the coordinator's.
                let in_tasks: Vec<_> = points.iter().filter(|(p, _)| !p.starts_with("checkpoint.")).collect();
                let &&(point, most) = rng.pick(&in_tasks);
                Kill::Panic(point, hit(&mut rng, most), timed)
            }
            _ => {
                let &(point, most) = rng.pick(&points);
                Kill::Fault(point, hit(&mut rng, most))
            }
        };
        let (ended, text) = child.run(p, &interval, bounded, Some(kill))?;
        let resumed = resumed_from(&text);
        out.restarts += u32::from(resumed.is_some());
        note_task_failures(&text, &mut out.task_failures);
        let start = match resumed {
            Some(c) => format!("resumed from checkpoint {c}"),
            None if text.contains("starting from the beginning") => "started from the beginning".into(),
            None => "killed before it opened the job".into(),
        };
        let mode = if bounded { "bounded" } else { "unbounded" };
        let written = producer.written.load(Ordering::SeqCst);
        match ended {
            Ended::Killed { how, by_fault } => {
                out.kills += 1;
                out.fault_kills += u32::from(by_fault);
                progress(&format!(
                    "{:<15} kill {:>4}/{:<4} round {round:>4}: p={p} checkpoint {interval:>5} {mode:>9}, {written} events written, {start}; killed: {how}",
                    pipeline.name(),
                    out.kills,
                    plan.kills
                ));
            }
            Ended::Finished => {
                out.finished_early += 1;
                progress(&format!(
                    "{:<15} round {round:>4}: p={p} checkpoint {interval:>5} {mode:>9}, {start}; finished before its kill",
                    pipeline.name()
                ));
            }
        }
    }
    producer.finish(plan.events)?;
    drop(producer);
    let p = *rng.pick(&plan.parallelism);
    let interval = rng.pick(&plan.intervals).clone();
    let (_, text) = child.run(p, &interval, true, None)?;
    out.restarts += u32::from(resumed_from(&text).is_some());
    note_task_failures(&text, &mut out.task_failures);
    progress(&format!(
        "{:<15} final run: p={p} checkpoint {interval}, bounded, finished; comparing the output",
        pipeline.name()
    ));

    let expected = pipeline.expected(g);
    let (key, value) = (pipeline.key(), pipeline.value());
    out.verdict = match pipeline.output() {
        Output::Topic { topic, changelog, .. } => {
            let records = topic_records(dir, topic)?;
            if changelog {
                compare::compare_changelog(&expected, records.iter().map(|r| parse_row(r)), key, value)
            } else {
                compare::compare(&expected, &records.iter().map(|r| parse_row(r)).collect::<Vec<_>>(), key, value)
            }
        }
        Output::Files => {
            let (rows, hidden) = file_rows(&out_dir)?;
            out.leftovers = hidden;
            compare::compare(&expected, &rows.iter().map(|r| parse_row(r)).collect::<Vec<_>>(), key, value)
        }
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", pipeline.name()))?;
    let dead_letter = format!("{}-dead-letter", pipeline.job());
    if log.topic(&dead_letter).is_ok() {
        out.dead_letters = topic_records(dir, &dead_letter)?;
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

/// Notes the restarts a child made by itself (a task failed), with their causes; not those of
/// the panics the benchmark injected.
fn note_task_failures(text: &str, notes: &mut Vec<String>) {
    let restarts = text.lines().filter(|l| l.contains(RESTART_LOGGED) && !l.contains("KEEL_FAULTS: injected panic"));
    for line in restarts {
        notes.push(line.to_string());
    }
}

/// Parses a record as JSON; one that is not JSON becomes a string value (compared as wrong).
fn parse_row(record: &str) -> Value {
    serde_json::from_str(record).unwrap_or_else(|_| Value::String(record.to_string()))
}

/// Every committed record of a topic, as text.
fn topic_records(data: &Path, topic: &str) -> Result<Vec<String>> {
    let log = Log::open(data).with_context(|| format!("opening the log in {}", data.display()))?;
    let t = log.topic(topic).with_context(|| format!("opening topic {topic}"))?;
    let mut out = vec![];
    for p in 0..t.partitions() {
        let mut r = t.reader(p, 0).with_context(|| format!("reading topic {topic} partition {p}"))?;
        while let Some(chunk) = r.read(1 << 20).with_context(|| format!("reading topic {topic} partition {p}"))? {
            chunk
                .for_each(|rec| out.push(String::from_utf8_lossy(rec.value).into_owned()))
                .with_context(|| format!("reading topic {topic} partition {p}"))?;
        }
    }
    Ok(out)
}

/// Every line of the published files in `dir` (names not starting with `.` or `_`), and the
/// names of hidden files found (in-progress or pending files: never results).
fn file_rows(dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let (mut rows, mut hidden) = (vec![], vec![]);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((rows, hidden)),
        Err(e) => return Err(e).with_context(|| format!("listing the sink directory {}", dir.display())),
    };
    let mut files: Vec<PathBuf> = vec![];
    for e in entries {
        let e = e.with_context(|| format!("listing the sink directory {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden.push(name);
        } else if !name.starts_with('_') {
            files.push(e.path());
        }
    }
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading sink file {}", f.display()))?;
        rows.extend(text.lines().map(str::to_string));
    }
    Ok((rows, hidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resumed_checkpoint_is_read_from_the_start_line() {
        let line =
            "job 'chaos-window': parallelism 2, checkpoint every 100ms, resuming from checkpoint 17; sink totals";
        assert_eq!(resumed_from(line), Some(17));
        assert_eq!(resumed_from("job 'x': parallelism 1, starting from the beginning; sink"), None);
    }

    #[test]
    fn hidden_files_are_never_read_and_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-a-0-0000000001.jsonl"), "{\"a\":1}\n{\"a\":2}\n").unwrap();
        std::fs::write(dir.path().join(".part-a-0-7.inprogress"), "{\"a\":3}\n").unwrap();
        std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
        let (rows, hidden) = file_rows(dir.path()).unwrap();
        assert_eq!(rows, vec!["{\"a\":1}", "{\"a\":2}"]);
        assert_eq!(hidden, vec![".part-a-0-7.inprogress"]);
    }
}
