//! Deciding whether a HOP window aggregate can be computed from slices (see the runtime's
//! `ops/slices.rs`): when the HOP's window columns reach the aggregate only as its window_start
//! and window_end group columns, the window assigner can put each row in its one slice (a
//! tumbling window of the slide) instead of repeating it `size / slide` times, and the aggregate
//! builds each window from its slices.
//!
//! Invariants: the rewrite happens only when no operator between the assigner and the aggregate
//! reads a window column (filters do not mention them, projections only move them), and the
//! aggregate's input takes window_start and window_end exactly as its window columns and
//! window_time not at all; otherwise the plan is left as it was.

use crate::plan::{PlannedOp, Step};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use keel_types::WindowSpec;
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    End,
    Time,
}

/// Where the window columns are at some point of the chain: (column index, which one).
type Places = Vec<(usize, Kind)>;

fn bare(e: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    e.downcast_ref::<Column>().map(Column::index)
}

fn mentions(e: &Arc<dyn PhysicalExpr>, places: &Places) -> bool {
    collect_columns(e).iter().any(|c| places.iter().any(|&(i, _)| i == c.index()))
}

/// The places after a projection, or None when an expression computes from a window column.
fn through_projection(exprs: &[Arc<dyn PhysicalExpr>], places: &Places) -> Option<Places> {
    let mut out = vec![];
    for (p, e) in exprs.iter().enumerate() {
        match bare(e).and_then(|c| places.iter().find(|&&(i, _)| i == c)) {
            Some(&(_, kind)) => out.push((p, kind)),
            None if mentions(e, places) => return None,
            None => {}
        }
    }
    Some(out)
}

/// If the chain `ops` ends in a HOP assigner followed only by filters and projections that leave
/// the window columns alone, and `pre` (the aggregate's input projection, keys first, then
/// window_start and window_end at `num_keys` and `num_keys + 1`) takes them only as its window
/// columns: rewrites the assigner to assign slices and returns the HOP's (size, slide).
pub(crate) fn slice_hop(ops: &mut [PlannedOp], pre: &[Arc<dyn PhysicalExpr>], num_keys: usize) -> Option<(i64, i64)> {
    let at = ops.iter().rposition(|o| matches!(o, PlannedOp::WindowAssign(..)))?;
    let PlannedOp::WindowAssign(WindowSpec::Hop { size, slide, offset }, time_col, schema) = &ops[at] else {
        return None;
    };
    if size <= slide {
        return None;
    }
    let n_in = schema.fields().len().checked_sub(3)?;
    let mut places: Places = vec![(n_in, Kind::Start), (n_in + 1, Kind::End), (n_in + 2, Kind::Time)];
    for op in &ops[at + 1..] {
        places = match op {
            PlannedOp::Step(Step::Filter(p)) if !mentions(p, &places) => places,
            PlannedOp::Step(Step::Project(exprs, _)) => through_projection(exprs, &places)?,
            _ => return None,
        };
    }
    for (p, e) in pre.iter().enumerate() {
        let kind = bare(e).and_then(|c| places.iter().find(|&&(i, _)| i == c)).map(|&(_, k)| k);
        let wanted = match p {
            _ if p == num_keys => Some(Kind::Start),
            _ if p == num_keys + 1 => Some(Kind::End),
            _ => None,
        };
        if kind != wanted || (kind.is_none() && mentions(e, &places)) {
            return None;
        }
    }
    let (size, slide) = (*size, *slide);
    let spec = WindowSpec::Tumble { size: slide, offset: *offset };
    ops[at] = PlannedOp::WindowAssign(spec, *time_col, schema.clone());
    Some((size, slide))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, lit};

    fn col(i: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new(&format!("c{i}"), i))
    }

    /// A chain: assigner over (k, v, ts) giving (k, v, ts, window_start, window_end, window_time).
    fn chain(spec: WindowSpec, after: Vec<PlannedOp>) -> Vec<PlannedOp> {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let fields: Vec<Field> = ["k", "v", "ts", "window_start", "window_end", "window_time"]
            .iter()
            .enumerate()
            .map(|(i, n)| Field::new(*n, if i < 2 { DataType::Int64 } else { ts.clone() }, true))
            .collect();
        let mut ops = vec![PlannedOp::WindowAssign(spec, 2, Arc::new(Schema::new(fields)))];
        ops.extend(after);
        ops
    }

    fn project(exprs: Vec<Arc<dyn PhysicalExpr>>) -> PlannedOp {
        PlannedOp::Step(Step::Project(exprs, Arc::new(Schema::empty())))
    }

    fn assigned(ops: &[PlannedOp]) -> WindowSpec {
        match &ops[0] {
            PlannedOp::WindowAssign(spec, ..) => *spec,
            _ => unreachable!("the chain starts with its assigner"),
        }
    }

    const HOP: WindowSpec = WindowSpec::Hop { size: 10_000, slide: 2_000, offset: 0 };

    #[test]
    fn a_hop_read_only_as_group_columns_is_sliced() {
        // A filter on v, a projection moving columns (window_end before window_start), then the
        // aggregate input: key k, window_start, window_end, argument v.
        let gt = Arc::new(BinaryExpr::new(col(1), Operator::Gt, lit(3i64)));
        let mut ops =
            chain(HOP, vec![PlannedOp::Step(Step::Filter(gt)), project(vec![col(0), col(1), col(4), col(3)])]);
        let pre = vec![col(0), col(3), col(2), col(1)];
        assert_eq!(slice_hop(&mut ops, &pre, 1), Some((10_000, 2_000)));
        assert_eq!(assigned(&ops), WindowSpec::Tumble { size: 2_000, offset: 0 });
    }

    #[test]
    fn a_hop_whose_window_columns_are_read_otherwise_is_left_alone() {
        let pre = vec![col(0), col(3), col(4), col(1)];
        let reads_start = Arc::new(BinaryExpr::new(col(3), Operator::Gt, lit(3i64)));
        type Exprs = Vec<Arc<dyn PhysicalExpr>>;
        let cases: Vec<(Vec<PlannedOp>, Exprs)> = vec![
            // A filter on window_start.
            (vec![PlannedOp::Step(Step::Filter(reads_start.clone()))], pre.clone()),
            // A projection computing from window_start.
            (vec![project(vec![col(0), col(1), reads_start.clone(), col(3), col(4)])], pre.clone()),
            // window_time as a key, or the window columns swapped.
            (vec![], vec![col(5), col(3), col(4), col(1)]),
            (vec![], vec![col(0), col(4), col(3), col(1)]),
            // An aggregate argument reading window_end.
            (vec![], vec![col(0), col(3), col(4), col(4)]),
        ];
        for (i, (after, pre)) in cases.into_iter().enumerate() {
            let mut ops = chain(HOP, after);
            assert_eq!(slice_hop(&mut ops, &pre, 1), None, "case {i}");
            assert_eq!(assigned(&ops), HOP, "case {i}");
        }
        // Not a HOP, or a HOP whose slide is its size.
        for spec in
            [WindowSpec::Tumble { size: 2_000, offset: 0 }, WindowSpec::Hop { size: 2_000, slide: 2_000, offset: 0 }]
        {
            let mut ops = chain(spec, vec![]);
            assert_eq!(slice_hop(&mut ops, &pre, 1), None);
            assert_eq!(assigned(&ops), spec);
        }
    }
}
