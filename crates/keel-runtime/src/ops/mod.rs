//! Streaming operators: stateless ones built on DataFusion physical expressions (filter,
//! projection), window assignment for the window table-valued functions, and the keyed window
//! aggregate whose state is checkpointed per key group.

pub mod accumulators;
pub mod aggregate;
mod bits_map;
mod distinct;
pub mod expr;
pub mod group_aggregate;
mod held;
pub mod join;
mod join_filter;
mod late;
pub mod over;
pub mod rank;
mod rank_store;
mod session;
mod short_bytes;
mod slices;
pub mod topn;
pub mod udaf;
pub mod window;

pub use aggregate::{AggregateCall, AggregateFunction, GroupColumn, WindowAggregate, WindowAggregateSpec};
pub use expr::{Filter, Projection};
pub use group_aggregate::{GroupAggregate, GroupAggregateSpec};
pub use join::{Join, JoinSide, JoinSpec, JoinType};
pub use over::{OverAggregate, OverFrame, OverSpec};
pub use rank::{Rank, RankSpec};
pub use topn::{Numbering, TopNSpec, WindowTopN};
pub use udaf::UserAggregate;
pub use window::WindowAssigner;
