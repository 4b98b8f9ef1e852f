//! Streaming operators: stateless ones built on DataFusion physical expressions (filter,
//! projection), window assignment for the window table-valued functions, and the keyed window
//! aggregate whose state is checkpointed per key group.

pub mod accumulators;
pub mod aggregate;
pub mod expr;
mod session;
pub mod topn;
pub mod window;

pub use aggregate::{AggregateCall, AggregateFunction, GroupColumn, WindowAggregate, WindowAggregateSpec};
pub use expr::{Filter, Projection};
pub use topn::{Numbering, TopNSpec, WindowTopN};
pub use window::WindowAssigner;
