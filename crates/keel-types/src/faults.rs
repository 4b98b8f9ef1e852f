//! Fault injection for Keel's failure tests: named points in the code where a test can make the
//! process die by SIGKILL or make the current task panic, at the n-th time the point is reached.
//!
//! Off unless the environment variable `KEEL_FAULTS` is set, as a comma-separated list of
//! `point=action@n` with action `kill` or `panic` and `n` the 1-based hit to fire on (`@0`: every
//! hit). Example: `KEEL_FAULTS=sink.commit=kill@3`. When unset, a check is one atomic load.
//!
//! Points: `checkpoint.before-manifest`, `checkpoint.after-manifest`, `sink.commit`,
//! `log.append` (dies with half a batch written), `aggregate.process`, `source.poll`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Kill,
    Panic,
}

struct Fault {
    point: String,
    action: Action,
    at: u64,
    hits: AtomicU64,
}

fn faults() -> &'static [Fault] {
    static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let Ok(spec) = std::env::var("KEEL_FAULTS") else { return vec![] };
        spec.split(',')
            .filter_map(|item| {
                let (point, rest) = item.trim().split_once('=')?;
                let (action, at) = rest.split_once('@').unwrap_or((rest, "1"));
                let action = match action {
                    "kill" => Action::Kill,
                    "panic" => Action::Panic,
                    _ => return None,
                };
                Some(Fault { point: point.to_string(), action, at: at.parse().ok()?, hits: AtomicU64::new(0) })
            })
            .collect()
    })
}

/// Whether the fault at `point` fires now (counts the hit); the caller then calls `fire`.
pub fn armed(point: &str) -> Option<Action> {
    let all = faults();
    if all.is_empty() {
        return None;
    }
    all.iter().find(|f| f.point == point).and_then(|f| {
        let n = f.hits.fetch_add(1, Ordering::SeqCst) + 1;
        (f.at == 0 || n == f.at).then_some(f.action)
    })
}

/// Carries out an action: SIGKILL this process, or panic naming the point.
pub fn fire(point: &str, action: Action) {
    match action {
        Action::Kill => {
            eprintln!("KEEL_FAULTS: killing the process at {point}");
            // SAFETY: kill(2) on our own pid with SIGKILL has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // Invariant: SIGKILL cannot be caught, so this is never reached.
            std::process::abort();
        }
        Action::Panic => panic!("KEEL_FAULTS: injected panic at {point}"),
    }
}

/// `armed` then `fire`: the usual one-line fault point.
pub fn hit(point: &str) {
    if let Some(a) = armed(point) {
        fire(point, a);
    }
}
