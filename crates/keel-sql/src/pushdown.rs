//! Telling a source which of its rows a query keeps, so that it need not build the others.
//!
//! Today one case: a filter on the `event_type` column directly over a `nexmark` table (the
//! `bid`, `auction` and `person` views) lets the generator build rows of those kinds only.
//!
//! Invariant: a pushed filter is a hint. The filter itself stays in the plan, so a source that
//! builds more rows than the hint allows gives the same result; a source never builds fewer rows
//! than the filter keeps, because only conjuncts every kept row satisfies are read here.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

/// The Nexmark event kinds a predicate over the generator's columns can keep, if its conjuncts
/// bound them (`event_type = k`, `k = event_type`, `event_type IN (...)`); `None` when no
/// conjunct does.
pub(crate) fn nexmark_event_types(predicate: &Expr) -> Option<Vec<i32>> {
    let mut kinds: Option<Vec<i32>> = None;
    for conjunct in split_conjunction(predicate) {
        let Some(allowed) = kinds_of(conjunct) else { continue };
        kinds = Some(match kinds {
            None => allowed,
            Some(k) => k.into_iter().filter(|x| allowed.contains(x)).collect(),
        });
    }
    kinds
}

/// The kinds one conjunct allows, when it is a comparison of `event_type` with constants.
fn kinds_of(e: &Expr) -> Option<Vec<i32>> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
            match (is_event_type(left), is_event_type(right)) {
                (true, false) => Some(vec![literal(right)?]),
                (false, true) => Some(vec![literal(left)?]),
                _ => None,
            }
        }
        Expr::InList(l) if !l.negated && is_event_type(&l.expr) => l.list.iter().map(literal).collect(),
        _ => None,
    }
}

/// Whether a projection's `event_type` output is its input's `event_type` column, unchanged
/// (and no other expression is renamed to `event_type`).
pub(crate) fn passes_event_type(exprs: &[Expr]) -> bool {
    let named = |e: &&Expr| match e {
        Expr::Column(c) => c.name.eq_ignore_ascii_case("event_type"),
        Expr::Alias(a) => a.name.eq_ignore_ascii_case("event_type"),
        _ => false,
    };
    let mut outputs = exprs.iter().filter(named).peekable();
    outputs.peek().is_some() && outputs.all(is_event_type_column)
}

fn is_event_type_column(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => c.name.eq_ignore_ascii_case("event_type"),
        Expr::Alias(a) => is_event_type_column(&a.expr),
        _ => false,
    }
}

fn is_event_type(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => c.name.eq_ignore_ascii_case("event_type"),
        Expr::Cast(c) => is_event_type(&c.expr),
        Expr::TryCast(c) => is_event_type(&c.expr),
        _ => false,
    }
}

fn literal(e: &Expr) -> Option<i32> {
    let Expr::Literal(v, _) = e else { return None };
    match v {
        ScalarValue::Int8(Some(x)) => Some(i32::from(*x)),
        ScalarValue::Int16(Some(x)) => Some(i32::from(*x)),
        ScalarValue::Int32(Some(x)) => Some(*x),
        ScalarValue::Int64(Some(x)) => i32::try_from(*x).ok(),
        ScalarValue::UInt8(Some(x)) => Some(i32::from(*x)),
        ScalarValue::UInt16(Some(x)) => Some(i32::from(*x)),
        ScalarValue::UInt32(Some(x)) => i32::try_from(*x).ok(),
        ScalarValue::UInt64(Some(x)) => i32::try_from(*x).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn reads_the_kinds_a_filter_keeps() {
        let e = col("event_type").eq(lit(2i32));
        assert_eq!(nexmark_event_types(&e), Some(vec![2]));
        let e = lit(1i64).eq(col("event_type")).and(col("x").gt(lit(3)));
        assert_eq!(nexmark_event_types(&e), Some(vec![1]));
        let e = col("event_type").in_list(vec![lit(0), lit(1)], false).and(col("event_type").eq(lit(1)));
        assert_eq!(nexmark_event_types(&e), Some(vec![1]));
        // Disjunctions, negations and other columns say nothing.
        assert_eq!(nexmark_event_types(&col("event_type").eq(lit(1)).or(col("x").eq(lit(2)))), None);
        assert_eq!(nexmark_event_types(&col("event_type").in_list(vec![lit(0)], true)), None);
        assert_eq!(nexmark_event_types(&col("event_type").gt(lit(0))), None);
        assert_eq!(nexmark_event_types(&col("other").eq(lit(0))), None);
    }

    #[test]
    fn only_projections_passing_event_type_through_are_crossed() {
        assert!(passes_event_type(&[col("event_type"), col("bid")]));
        assert!(passes_event_type(&[col("event_type").alias("event_type")]));
        assert!(!passes_event_type(&[col("bid")]), "event_type dropped");
        assert!(!passes_event_type(&[col("kind").alias("event_type")]), "another column renamed to it");
        assert!(!passes_event_type(&[col("event_type"), lit(1).alias("event_type")]), "a second event_type");
    }
}
