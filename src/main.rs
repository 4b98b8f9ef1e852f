//! The `keel` command: topics, produce/consume, running SQL pipelines, the demo and the
//! benchmark. Errors are reported with their cause chain and a non-zero exit code.

mod cli;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: operators keep millions of small allocations and
/// free large batch buffers at a high rate, which glibc's malloc answers with fresh (zeroed) pages
/// from the kernel; see BENCHMARKS.md (Nexmark) for the measurements.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "keel", version, about = "Keel: a fault-tolerant real-time stream processor", long_about = None)]
struct Cli {
    /// Where topics, checkpoints and job state live.
    #[arg(long, global = true, env = "KEEL_DATA_DIR", default_value = "./keel-data")]
    data_dir: PathBuf,
    /// Log level: error, warn, info, debug or trace (or a tracing filter such as keel_runtime=debug).
    #[arg(long, global = true, env = "KEEL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, describe, delete and repair topics.
    Topic(cli::topic::TopicArgs),
    /// Append JSON lines from standard input to a topic; returns once they are durable.
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's committed records as JSON lines (with --materialize: the table its changelog describes).
    Consume(cli::topic::ConsumeArgs),
    /// Run a pipeline written in Flink SQL; resumes from its newest checkpoint.
    Run(cli::run::RunArgs),
    /// Generate sample events and run a windowed SQL pipeline over them (start here).
    Demo(cli::demo::DemoArgs),
    /// Benchmarks: throughput of the windowed SQL pipeline (`windows`) or the Nexmark queries
    /// (`nexmark`); exactly-once under SIGKILLs at seeded moments (`chaos`).
    Bench(cli::bench::BenchArgs),
}

/// Turns transparent huge pages off for this process. With them, each page fault on memory the
/// allocator had given back to the kernel zeroes a whole 2 MiB page, after the kernel compacted
/// memory to find one: for the operators with GBs of state (Nexmark q4, q9, q18, q20) that was a
/// third to a half of their CPU time, and it varied by 3x from run to run with the state of the
/// machine's memory. The TLB misses of 4 KiB pages cost them 5-10% more user time instead
/// (BENCHMARKS.md, Nexmark). Failing (a kernel without the call) only leaves the default.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag of the calling process.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!("transparent huge pages stay on: {}", std::io::Error::last_os_error());
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(&cli.log);
    no_transparent_huge_pages();
    let result = match cli.command {
        Command::Topic(a) => cli::topic::topic(&cli.data_dir, a),
        Command::Produce(a) => cli::produce::produce(&cli.data_dir, a),
        Command::Consume(a) => cli::topic::consume(&cli.data_dir, a),
        Command::Run(a) => cli::run::run(&cli.data_dir, a),
        Command::Demo(a) => cli::demo::demo(&cli.data_dir, a),
        Command::Bench(a) => cli::bench::bench(&cli.data_dir, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
