//! Keel's shared vocabulary, used by every other crate: how errors are classified, how time and
//! durations are written, how keys map to key groups and subtasks, and how event times map to
//! windows.
//!
//! This crate has no heavy dependencies (no Arrow, no DataFusion) so that the log can build on it
//! quickly. Everything here is pure and deterministic: the same inputs give the same outputs in
//! every process and every version of Keel that reads the same on-disk data, because key-group
//! assignment and window bounds are part of what checkpoints store.

pub mod checked_json;
pub mod error;
pub mod faults;
pub mod guard;
pub mod keys;
pub mod lock;
pub mod test_child;
pub mod test_rng;
pub mod time;
pub mod window;

pub use error::ErrorClass;
pub use keys::{DEFAULT_KEY_GROUPS, KeyGroupRange};
pub use window::WindowSpec;
