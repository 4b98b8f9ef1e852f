//! The command implementations behind `keel`'s subcommands.

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod materialize;
pub mod produce;
pub mod run;
pub mod topic;

use tracing_subscriber::EnvFilter;

/// Logs go to standard error, so that standard output carries only data.
pub fn init_logging(level: &str) {
    let filter = if level.contains('=') {
        level.to_string()
    } else {
        format!(
            "warn,keel={level},keel_runtime={level},keel_connectors={level},keel_log={level},keel_sql={level},keel_state={level}"
        )
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
