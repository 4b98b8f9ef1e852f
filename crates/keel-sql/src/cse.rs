//! Function calls a query evaluates both in its WHERE and in its SELECT (q21's
//! `REGEXP_EXTRACT(url, ...)`, say) are computed once: a projection before the filter adds each
//! shared call as a column, and the filter and the SELECT read that column.
//!
//! DataFusion's own common-subexpression pass works inside one plan node; this one spans a
//! projection and the filter right below it. Invariants: only deterministic (non-volatile) calls
//! are shared; the rewritten plan has the same output columns, names and types; a plan this
//! rewrote has nothing left to share, so the rewrite cannot repeat.

use crate::error::Result;
use crate::planner::{planning, strip_alias};
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Projection, Volatility};

/// The name of the column holding shared call `i`.
fn shared_name(i: usize) -> String {
    format!("__keel_shared_{i}")
}

fn is_call(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Volatile)
}

/// The outermost calls of `exprs` that also occur in `predicate`, each once.
fn shared_calls(predicate: &Expr, exprs: &[Expr]) -> Vec<Expr> {
    let mut in_predicate = vec![];
    let _ = predicate.apply(|e| {
        if is_call(e) {
            in_predicate.push(e.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut shared: Vec<Expr> = vec![];
    for e in exprs {
        let _ = e.apply(|x| {
            if is_call(x) && in_predicate.contains(x) {
                if !shared.contains(x) {
                    shared.push(x.clone());
                }
                return Ok(TreeNodeRecursion::Jump);
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    shared
}

/// `e` with every shared call replaced by its column.
fn replace(e: &Expr, shared: &[Expr]) -> Result<Expr> {
    e.clone()
        .transform_down(|x| match shared.iter().position(|s| s == &x) {
            Some(i) => {
                Ok(Transformed::new(Expr::Column(Column::from_name(shared_name(i))), true, TreeNodeRecursion::Jump))
            }
            None => Ok(Transformed::no(x)),
        })
        .map(|t| t.data)
        .map_err(planning("sharing calls between WHERE and SELECT"))
}

/// `p` (a projection over a filter, possibly through aliases and projections that only pass
/// columns on) rewritten to compute the calls both evaluate once, or `None` when they share none
/// (or the rewrite cannot keep the output's names).
pub(crate) fn hoist_shared(p: &Projection) -> Result<Option<LogicalPlan>> {
    // Down to the filter, reading the SELECT in terms of the columns the filter sees.
    let mut exprs = p.expr.clone();
    let mut node = p.input.as_ref();
    let f = loop {
        let (outputs, inputs): (Vec<Column>, Vec<Expr>) = match node {
            LogicalPlan::Filter(f) => break f,
            LogicalPlan::SubqueryAlias(a) => {
                (a.schema.columns(), a.input.schema().columns().into_iter().map(Expr::Column).collect())
            }
            LogicalPlan::Projection(q) if q.expr.iter().all(|e| matches!(strip_alias(e), Expr::Column(_))) => {
                (q.schema.columns(), q.expr.iter().map(|e| strip_alias(e).clone()).collect())
            }
            _ => return Ok(None),
        };
        exprs = exprs.into_iter().map(|e| substitute(e, &outputs, &inputs)).collect::<Result<_>>()?;
        node = match node {
            LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
            LogicalPlan::Projection(q) => q.input.as_ref(),
            _ => return Ok(None),
        };
    };
    let shared = shared_calls(&f.predicate, &exprs);
    if shared.is_empty() {
        return Ok(None);
    }
    let input_cols = f.input.schema().columns().into_iter().map(Expr::Column);
    let added = shared.iter().enumerate().map(|(i, e)| e.clone().alias(shared_name(i)));
    let predicate = replace(&f.predicate, &shared)?;
    let mut select = vec![];
    for (i, e) in exprs.iter().enumerate() {
        let e = replace(e, &shared)?;
        // Every output column keeps its name.
        let name = p.schema.field(i).name();
        select.push(match &e {
            Expr::Alias(a) if &a.name == name => e,
            Expr::Column(c) if &c.name == name => e,
            _ => e.alias(name),
        });
    }
    // A rewrite DataFusion refuses (two outputs left with one name, say) is simply not made.
    Ok(LogicalPlanBuilder::from(f.input.as_ref().clone())
        .project(input_cols.chain(added))
        .and_then(|b| b.filter(predicate))
        .and_then(|b| b.project(select))
        .and_then(|b| b.build())
        .ok())
}

/// `e` with each column of `outputs` replaced by the expression at the same place in `inputs`.
fn substitute(e: Expr, outputs: &[Column], inputs: &[Expr]) -> Result<Expr> {
    e.transform_up(|x| match &x {
        Expr::Column(c) => match outputs.iter().position(|o| o == c) {
            Some(i) => Ok(Transformed::yes(inputs[i].clone())),
            None => Ok(Transformed::no(x)),
        },
        _ => Ok(Transformed::no(x)),
    })
    .map(|t| t.data)
    .map_err(planning("sharing calls between WHERE and SELECT"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn finds_the_outermost_calls_both_sides_use() {
        let lower = datafusion::functions::string::lower();
        let upper = datafusion::functions::string::upper();
        let l = lower.call(vec![col("c")]);
        let u = upper.call(vec![l.clone()]);
        // The SELECT uses upper(lower(c)); the WHERE uses it too and lower(c) on its own.
        let predicate = u.clone().eq(lit("X")).or(l.clone().eq(lit("x")));
        assert_eq!(shared_calls(&predicate, &[u.clone(), col("d")]), vec![u.clone()]);
        assert_eq!(shared_calls(&predicate, &[l.clone(), u.clone()]), vec![l, u]);
        assert!(shared_calls(&col("d").gt(lit(1)), &[col("d")]).is_empty());
    }
}
