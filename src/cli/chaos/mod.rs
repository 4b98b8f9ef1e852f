//! `keel bench chaos`: exactly-once under hostile conditions, measured. Several pipelines (a
//! tumbling-window aggregate, an interval join, an updating GROUP BY written as a changelog, a
//! deduplication, a window aggregate to files) each run as child `keel run` processes on their
//! own data directory while their input is being written; the children are SIGKILLed at seeded
//! moments (timed, or at `KEEL_FAULTS` fault points) and restarted, and after the last kill a
//! bounded run finishes the job. Its committed output is compared record for record with the
//! result computed independently from the same seeded events (`pipelines.rs`, `compare.rs`).
//!
//! Invariants: the seed is always printed, and every decision (events, kill kinds and moments,
//! parallelism, checkpoint interval, bounded or not) derives from it, so a run can be replayed
//! (the timing of a timed kill relative to the job's progress still varies from run to run);
//! the benchmark exits non-zero, printing the seed and the first differences, if any row was
//! lost, duplicated or wrong, any row went to a dead-letter topic, or a hidden file was left.

mod compare;
mod pipelines;
mod rounds;

use anyhow::{Context, Result, bail};
use clap::Args;
use pipelines::Pipeline;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// The options of the `chaos` suite (the shared `--events`, `--parallelism` and
/// `--checkpoint-interval` also apply: events per pipeline, and the values each round chooses
/// from).
#[derive(Args)]
pub struct ChaosArgs {
    /// chaos: the seed of every random decision (default: from the clock; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// chaos: SIGKILLs in total, shared out over the pipelines.
    #[arg(long, default_value_t = 50)]
    kills: u32,
    /// chaos: the pipelines to run, comma-separated.
    #[arg(long, default_value = "window,interval-join,group-changelog,dedup,files")]
    pipelines: String,
    /// chaos: keep every pipeline's data directory (with its children's output in runs.log), not
    /// only those of pipelines that failed.
    #[arg(long)]
    keep: bool,
}

/// Events per pipeline when `--events` is not given.
pub const DEFAULT_EVENTS: u64 = 20_000;
/// Checkpoint intervals each round chooses from when `--checkpoint-interval` is not given.
pub const DEFAULT_INTERVALS: &str = "50ms,100ms,250ms";

pub fn chaos(dir: &Path, args: &ChaosArgs, events: u64, parallelism: Vec<u32>, intervals: &str) -> Result<()> {
    if std::env::var_os("KEEL_FAULTS").is_some() {
        bail!("KEEL_FAULTS is set: unset it, the chaos benchmark sets fault points for its children itself");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let chosen = args
        .pipelines
        .split(',')
        .map(str::trim)
        .map(|name| {
            Pipeline::parse(name).with_context(|| {
                let all: Vec<&str> = pipelines::ALL.iter().map(|p| p.name()).collect();
                format!("no chaos pipeline '{name}': choose from {}", all.join(","))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(!chosen.is_empty(), "--pipelines names no pipeline");
    anyhow::ensure!(!parallelism.is_empty() && !parallelism.contains(&0), "--parallelism takes values of 1 or more");
    let intervals: Vec<String> = intervals.split(',').map(|s| s.trim().to_string()).collect();
    for i in &intervals {
        anyhow::ensure!(
            i != "off" && keel_types::time::parse_duration(i).is_ok(),
            "--checkpoint-interval '{i}': the chaos benchmark needs periodic checkpoints, like 100ms"
        );
    }
    let exe = std::env::current_exe().context("finding the keel executable")?;
    let root = dir.join(format!("chaos-{seed}"));
    let command = format!(
        "keel bench chaos --seed {seed} --kills {} --events {events} --pipelines {} --parallelism {} --checkpoint-interval {}",
        args.kills,
        chosen.iter().map(|p| p.name()).collect::<Vec<_>>().join(","),
        parallelism.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        intervals.join(",")
    );
    println!("chaos benchmark: seed {seed}; replay with: {command}");
    println!(
        "{} pipeline(s), {events} events each, {} kills in total; data under {}",
        chosen.len(),
        args.kills,
        root.display()
    );
    let started = Instant::now();
    let mut results = vec![];
    for (n, &pipeline) in chosen.iter().enumerate() {
        // Kills shared out, the first pipelines taking the remainder.
        let share = args.kills / chosen.len() as u32 + u32::from((n as u32) < args.kills % chosen.len() as u32);
        let plan = rounds::Plan {
            kills: share,
            events,
            seed: keel::sample::mix(seed, pipelines::ALL.iter().position(|p| *p == pipeline).unwrap_or(n) as u64 + 1),
            parallelism: parallelism.clone(),
            intervals: intervals.clone(),
        };
        let data = root.join(pipeline.name());
        let mut progress = |line: &str| {
            println!("{line}");
            let _ = std::io::stdout().flush();
        };
        let result = rounds::run(&exe, &data, pipeline, &plan, &mut progress);
        if !args.keep && result.as_ref().is_ok_and(|o| o.ok()) {
            // A pipeline that passed leaves nothing behind; a failed one keeps its data to look at.
            std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        }
        results.push((pipeline, result));
    }
    let elapsed = started.elapsed();
    print_table(&results);
    println!("seed {seed}; {:.0} s in all", elapsed.as_secs_f64());
    let mut failed = false;
    for (pipeline, result) in &results {
        let name = pipeline.name();
        match result {
            Err(e) => {
                failed = true;
                println!("\n{name}: the benchmark could not finish: {e:#}");
            }
            Ok(o) => {
                if !o.ok() {
                    failed = true;
                    println!(
                        "\n{name}: lost {}, duplicated {}, wrong {}; first differences:",
                        o.verdict.lost, o.verdict.duplicated, o.verdict.wrong
                    );
                    for d in &o.verdict.diffs {
                        println!("  {d}");
                    }
                }
                if !o.dead_letters.is_empty() {
                    println!("\n{name}: {} row(s) in the dead-letter topic (late or bad):", o.dead_letters.len());
                    for d in o.dead_letters.iter().take(5) {
                        println!("  {d}");
                    }
                }
                if !o.leftovers.is_empty() {
                    println!("\n{name}: hidden files left after the job finished: {}", o.leftovers.join(", "));
                }
                if !o.task_failures.is_empty() {
                    println!("\n{name}: {} restart(s) inside a run (a task failed), first:", o.task_failures.len());
                    for t in o.task_failures.iter().take(3) {
                        println!("  {t}");
                    }
                }
            }
        }
    }
    if failed {
        bail!(
            "the chaos benchmark found lost, duplicated or wrong output (or could not finish); seed {seed}, data kept \
             under {}; replay with: {command}",
            root.display()
        );
    }
    // Nothing of a passing run is left.
    let _ = std::fs::remove_dir(&root);
    Ok(())
}

fn print_table(results: &[(Pipeline, Result<rounds::Outcome>)]) {
    println!();
    println!(
        "| pipeline | kills | of them at fault points | restarts from a checkpoint | rows compared | lost | duplicated | wrong | seconds |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut total = rounds::Outcome::default();
    let mut errors = 0;
    for (pipeline, result) in results {
        match result {
            Ok(o) => {
                let v = &o.verdict;
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
                    pipeline.name(),
                    o.kills,
                    o.fault_kills,
                    o.restarts,
                    v.compared,
                    v.lost,
                    v.duplicated,
                    v.wrong,
                    o.elapsed.as_secs_f64()
                );
                total.kills += o.kills;
                total.fault_kills += o.fault_kills;
                total.restarts += o.restarts;
                total.verdict.compared += v.compared;
                total.verdict.lost += v.lost;
                total.verdict.duplicated += v.duplicated;
                total.verdict.wrong += v.wrong;
                total.elapsed += o.elapsed;
            }
            Err(_) => {
                errors += 1;
                println!("| {} | error | | | | | | | |", pipeline.name());
            }
        }
    }
    let t = &total.verdict;
    println!(
        "| **total** | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
        total.kills,
        total.fault_kills,
        total.restarts,
        t.compared,
        t.lost,
        t.duplicated,
        t.wrong,
        total.elapsed.as_secs_f64()
    );
    if errors > 0 {
        println!("({errors} pipeline(s) could not finish: see below)");
    }
}
