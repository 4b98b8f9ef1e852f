//! Interval joins: the bounds an ON condition puts on the difference between the two sides'
//! event times (`a.ts BETWEEN b.ts - INTERVAL ... AND b.ts + INTERVAL ...` and the like).
//!
//! Invariant: bounds are found only from conjuncts of the form `column ± interval literal`
//! compared with the other side's; anything else leaves them open, and a join bounded on one
//! side only is not an interval join.

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;

use crate::planner::strip_alias;

/// Milliseconds of an interval literal (or a plain integer of milliseconds).
fn literal_millis(e: &Expr) -> Option<i64> {
    use datafusion::common::ScalarValue;
    match strip_alias(e) {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        Expr::Cast(c) => literal_millis(&c.expr),
        _ => None,
    }
}

/// `column ± interval` as (column index in `schema`, offset in ms).
fn time_term(e: &Expr, schema: &DFSchema) -> Option<(usize, i64)> {
    use datafusion::logical_expr::Operator as Op;
    match strip_alias(e) {
        Expr::Column(c) => Some((schema.index_of_column(c).ok()?, 0)),
        Expr::BinaryExpr(b) if matches!(b.op, Op::Plus | Op::Minus) => {
            let (i, o) = time_term(&b.left, schema)?;
            let d = literal_millis(&b.right)?;
            Some((i, if b.op == Op::Plus { o + d } else { o - d }))
        }
        _ => None,
    }
}

/// For an interval join: the bounds `[lower, upper]` (ms) on `right time - left time` that the
/// ON condition's conjuncts put between the left time column `lt` and the right one `rt`
/// (indices in the joined schema), if it bounds them on both sides.
pub(crate) fn interval_bounds(filter: &Expr, schema: &DFSchema, lt: usize, rt: usize) -> Option<(i64, i64)> {
    use datafusion::logical_expr::Operator as Op;
    let (mut lower, mut upper): (Option<i64>, Option<i64>) = (None, None);
    let mut bound = |a: (usize, i64), op: Op, b: (usize, i64)| {
        // a.col + a.off  op  b.col + b.off
        let (diff_op, c) = if a.0 == lt && b.0 == rt {
            // L + x op R + y  <=>  R - L  flip(op)  x - y
            (
                match op {
                    Op::GtEq | Op::Gt => Op::LtEq,
                    Op::LtEq | Op::Lt => Op::GtEq,
                    other => other,
                },
                a.1 - b.1,
            )
        } else if a.0 == rt && b.0 == lt {
            // R + x op L + y  <=>  R - L op y - x
            (op, b.1 - a.1)
        } else {
            return;
        };
        match diff_op {
            Op::LtEq | Op::Lt => upper = Some(upper.map_or(c, |u| u.min(c))),
            Op::GtEq | Op::Gt => lower = Some(lower.map_or(c, |l| l.max(c))),
            Op::Eq => {
                upper = Some(upper.map_or(c, |u| u.min(c)));
                lower = Some(lower.map_or(c, |l| l.max(c)));
            }
            _ => {}
        }
    };
    for conj in datafusion::logical_expr::utils::split_conjunction(filter) {
        match strip_alias(conj) {
            Expr::BinaryExpr(b) if matches!(b.op, Op::Lt | Op::LtEq | Op::Gt | Op::GtEq | Op::Eq) => {
                if let (Some(a), Some(c)) = (time_term(&b.left, schema), time_term(&b.right, schema)) {
                    bound(a, b.op, c);
                }
            }
            Expr::Between(bt) if !bt.negated => {
                if let (Some(x), Some(lo), Some(hi)) =
                    (time_term(&bt.expr, schema), time_term(&bt.low, schema), time_term(&bt.high, schema))
                {
                    bound(x, Op::GtEq, lo);
                    bound(x, Op::LtEq, hi);
                }
            }
            _ => {}
        }
    }
    Some((lower?, upper?))
}
