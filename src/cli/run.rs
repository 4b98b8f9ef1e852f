//! `keel run`: plan a pipeline, open (or resume) its job, run it under the restart strategy with
//! a live progress line, and stop gracefully with a final checkpoint on Ctrl-C.

use anyhow::{Context, Result};
use clap::Args;
use keel_runtime::{JobConfig, JobDir, JobOutcome, Metrics};
use keel_types::time::format_watermark;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct RunArgs {
    /// The pipeline file (Flink SQL: CREATE TABLE ... and one INSERT INTO ... SELECT).
    pub pipeline: PathBuf,
    /// Subtasks per operator (default: the number of cores).
    #[arg(long, short = 'p')]
    pub parallelism: Option<u32>,
    /// Time between checkpoints, like 1s or 500ms; `off` disables periodic checkpoints.
    #[arg(long, default_value = "1s")]
    pub checkpoint_interval: String,
    /// A checkpoint not complete after this long is abandoned.
    #[arg(long, default_value = "60s")]
    pub checkpoint_timeout: String,
    /// How many complete checkpoints to keep.
    #[arg(long, default_value_t = 3)]
    pub retained_checkpoints: usize,
    /// Read sources up to the end offsets found when the job first started, then finish.
    #[arg(long)]
    pub bounded: bool,
    /// Discard the job's checkpoints and uncommitted output and start over.
    #[arg(long, conflicts_with = "from_checkpoint")]
    pub fresh: bool,
    /// Restore this checkpoint although newer ones exist (when they are damaged): output
    /// committed after it is written again. Keel refuses to do this by itself and names the
    /// checkpoint to give here.
    #[arg(long)]
    pub from_checkpoint: Option<u64>,
    /// Do not write a parity file with each checkpoint (it lets any one damaged state file be
    /// rebuilt; without it, such damage makes the checkpoint unusable).
    #[arg(long)]
    pub no_checkpoint_parity: bool,
    /// The job's name (default: the pipeline file's name without extension, with characters a
    /// job name cannot hold replaced by '_'): letters, digits, '.', '_' and '-'.
    #[arg(long)]
    pub name: Option<String>,
    /// Restarts allowed within --restart-window before the job fails for good.
    #[arg(long, default_value_t = 10)]
    pub restart_attempts: u32,
    /// The period over which --restart-attempts are counted, like 10m.
    #[arg(long, default_value = "10m")]
    pub restart_window: String,
    /// Do not print the progress line.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_dur(s: &str) -> Result<Duration> {
    Ok(keel_types::time::parse_duration(s)?)
}

/// What a finished run reports.
pub struct RunReport {
    /// `None` when the pipeline only asked for EXPLAIN.
    pub outcome: Option<JobOutcome>,
    pub metrics: Arc<Metrics>,
    pub elapsed: Duration,
}

pub fn run(data_dir: &Path, args: RunArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || {
        if handler_stop.swap(true, Ordering::SeqCst) {
            eprintln!(
                "\nsecond interrupt: exiting now without a final checkpoint (the next run resumes from the last one)"
            );
            std::process::exit(130);
        }
        eprintln!("\nstopping: taking a final checkpoint and committing (Ctrl-C again to exit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    let report = run_pipeline(data_dir, &args, stop)?;
    let Some(outcome) = report.outcome else { return Ok(()) };
    let m = &report.metrics;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let input = Metrics::get(&m.records_in);
    match outcome {
        JobOutcome::Finished { checkpoint } => eprintln!(
            "finished: read {input} events in {:.1}s ({:.0}/s), wrote {} rows, committed in checkpoint {checkpoint}",
            secs,
            input as f64 / secs,
            Metrics::get(&m.records_out)
        ),
        JobOutcome::Stopped { checkpoint } => {
            eprintln!("stopped after checkpoint {checkpoint}; run the same command again to resume")
        }
    }
    let (bad, late) = (Metrics::get(&m.bad_records), Metrics::get(&m.late_records));
    if bad > 0 || late > 0 {
        eprintln!(
            "{bad} bad record(s), {late} late record(s) kept out of closed windows and expired joins (dropped, or \
             written to the dead-letter topic where the table says 'late-records' = 'dead-letter')"
        );
    }
    Ok(())
}

/// The largest pipeline file `keel run` reads: far above any real pipeline, and the planner's
/// own limits (expression depth, view expansions) refuse much smaller ones that would be slow.
const MAX_PIPELINE_BYTES: u64 = 16 << 20;

/// The job name of a pipeline file run without `--name`. Keel 0.1 used the file name as it was;
/// a file whose name a job name cannot hold now gives another name, so if that job of 0.1 is
/// there, the run is refused with how to keep it (a new name would start the job over and write
/// its output again).
fn derived_job_name(data_dir: &Path, pipeline: &Path) -> Result<String> {
    let name = keel_runtime::job_name_from_file(pipeline);
    if let Some(raw) = pipeline.file_stem().and_then(|s| s.to_str())
        && raw != name
        && !raw.is_empty()
        && raw != "."
        && raw != ".."
        && data_dir.join("jobs").join(raw).join("job.json").exists()
    {
        anyhow::bail!(
            "the job of {} was named '{raw}' by an earlier Keel ({}); job names now hold only letters, digits, '.', \
             '_' and '-', and this file's is '{name}'. To resume that job, rename its directory to {} (or run with \
             --name {name} after renaming); without that, '{name}' would start over and write its output again",
            pipeline.display(),
            data_dir.join("jobs").join(raw).display(),
            data_dir.join("jobs").join(&name).display()
        );
    }
    Ok(name)
}

/// Reads a pipeline file of at most `MAX_PIPELINE_BYTES`.
fn read_pipeline(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read pipeline file {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PIPELINE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read pipeline file {}", path.display()))?;
    if bytes.len() as u64 > MAX_PIPELINE_BYTES {
        anyhow::bail!(
            "pipeline file {} is larger than {} MiB; a pipeline is SQL text (split it, or load data through a table)",
            path.display(),
            MAX_PIPELINE_BYTES >> 20
        );
    }
    String::from_utf8(bytes).with_context(|| format!("pipeline file {} is not UTF-8 text", path.display()))
}

/// Plans and runs a pipeline file; shared by `run`, `demo` and `bench`.
pub fn run_pipeline(data_dir: &Path, args: &RunArgs, stop: Arc<AtomicBool>) -> Result<RunReport> {
    let sql = read_pipeline(&args.pipeline)?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => derived_job_name(data_dir, &args.pipeline)?,
    };
    keel_runtime::validate_job_name(&name)?;
    let parallelism = args.parallelism.unwrap_or_else(|| {
        // One subtask per core, but never more than the key groups a keyed stage can use.
        std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).min(keel_types::DEFAULT_KEY_GROUPS)
    });
    let opts = keel_sql::PipelineOptions {
        job: name.clone(),
        data_dir: data_dir.to_path_buf(),
        parallelism,
        bounded: args.bounded,
        udfs: vec![],
        udafs: vec![],
    };
    let mut config = JobConfig::new(&name, data_dir);
    config.checkpoint_interval =
        if args.checkpoint_interval == "off" { None } else { Some(parse_dur(&args.checkpoint_interval)?) };
    config.checkpoint_timeout = parse_dur(&args.checkpoint_timeout)?;
    config.retained_checkpoints = args.retained_checkpoints;
    config.bounded = args.bounded;
    config.restart.max_attempts = args.restart_attempts;
    config.restart.window = parse_dur(&args.restart_window)?;
    config.checkpoint_parity = !args.no_checkpoint_parity;
    let pipeline = keel_sql::plan(&sql, &opts).map_err(|e| anyhow::anyhow!("{}: {e}", args.pipeline.display()))?;
    if pipeline.explain_only {
        print!("{}", pipeline.explain());
        return Ok(RunReport { outcome: None, metrics: Arc::new(Metrics::default()), elapsed: Duration::ZERO });
    }
    pipeline.check_sources().map_err(|e| anyhow::anyhow!("{}: {e}", args.pipeline.display()))?;
    config.bounded |= pipeline.sources_bounded();
    let mut job = JobDir::open_for(data_dir, &name, &pipeline.fingerprint, args.fresh, Some(&args.pipeline))?;
    let graph = pipeline.build_graph(&mut job).map_err(|e| anyhow::anyhow!("{}: {e}", args.pipeline.display()))?;
    let sinks: Vec<String> = pipeline.sink_guarantees().into_iter().map(|(s, g)| format!("sink {s}: {g}")).collect();
    let choice = match args.from_checkpoint {
        Some(n) => keel_state::Choice::Accept(n),
        None => keel_state::Choice::Newest,
    };
    let recovery = job.checkpoint_store(config.retained_checkpoints)?.recover(choice)?;
    for note in &recovery.notes {
        tracing::warn!("job '{name}': {note}");
    }
    if let (Some(n), Some(c)) = (args.from_checkpoint, &recovery.checkpoint) {
        tracing::warn!(
            "job '{name}': restoring checkpoint {n} as chosen with --from-checkpoint: output committed after it is \
             written again"
        );
        debug_assert_eq!(c.id, n);
    }
    let resume = recovery.checkpoint.map(|c| c.id);
    eprintln!(
        "job '{name}': parallelism {parallelism}, {}, {}; {}",
        match config.checkpoint_interval {
            Some(i) => format!("checkpoint every {i:?}"),
            None => "periodic checkpoints off".into(),
        },
        match resume {
            Some(id) => format!("resuming from checkpoint {id}"),
            None => "starting from the beginning".into(),
        },
        sinks.join("; ")
    );
    let metrics = Arc::new(Metrics::default());
    let done = Arc::new(AtomicBool::new(false));
    let progress = (!args.quiet).then(|| {
        let (m, d) = (metrics.clone(), done.clone());
        std::thread::spawn(move || progress_loop(&m, &d))
    });
    let started = Instant::now();
    let result = keel_runtime::run_job(&graph, &config, &job, metrics.clone(), stop);
    done.store(true, Ordering::SeqCst);
    if let Some(p) = progress {
        let _ = p.join();
    }
    let outcome = result?;
    Ok(RunReport { outcome: Some(outcome), metrics, elapsed: started.elapsed() })
}

/// Prints events/s, watermark and the last checkpoint once a second (in place on a terminal).
fn progress_loop(m: &Metrics, done: &AtomicBool) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty { Duration::from_millis(250) } else { Duration::from_secs(5) };
    let mut last = (Instant::now(), 0u64);
    let mut next = Instant::now() + every;
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() < next {
            continue;
        }
        next += every;
        let n = Metrics::get(&m.records_in);
        let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
        last = (Instant::now(), n);
        let ck = Metrics::get(&m.last_checkpoint);
        let ck_age = keel_types::time::now_ms() - m.last_checkpoint_ms.load(Ordering::Relaxed);
        let line = format!(
            "events {n} ({rate:.0}/s) | out {} | watermark {} | checkpoint {} | late {} | bad {} | restarts {}",
            Metrics::get(&m.records_out),
            format_watermark(m.watermark.load(Ordering::Relaxed)),
            if ck == 0 { "none yet".to_string() } else { format!("{ck} ({:.1}s ago)", ck_age as f64 / 1000.0) },
            Metrics::get(&m.late_records),
            Metrics::get(&m.bad_records),
            Metrics::get(&m.restarts),
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
}
