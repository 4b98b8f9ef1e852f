//! The non-equi part of a join's ON condition (q9's `B.dateTime BETWEEN A.dateTime AND
//! A.expires`), rewritten to read only the columns it uses, so that a candidate pair gathers
//! those columns and not whole rows before the condition is tested.
//!
//! Invariant: `expr` over a batch of `schema` (side 0's `cols[0]`, then side 1's `cols[1]`, in
//! that order) gives the condition's value over the joined row.

use super::join::{JoinSide, JoinSpec};
use crate::error::{Result, RuntimeError};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use std::sync::Arc;

/// The non-equi condition, rewritten to read only the columns it uses: `cols[s]` of side `s`
/// (left ones first, then right ones, in `schema`).
pub(crate) struct JoinFilter {
    pub expr: Arc<dyn PhysicalExpr>,
    pub cols: [Vec<usize>; 2],
    pub schema: SchemaRef,
}

impl JoinFilter {
    pub fn new(spec: &JoinSpec) -> Result<Option<Self>> {
        let Some(filter) = &spec.filter else { return Ok(None) };
        let nl = spec.left.schema.fields().len();
        let mut used: Vec<usize> = collect_columns(filter).iter().map(|c| c.index()).collect();
        used.sort_unstable();
        used.dedup();
        let cols = [
            used.iter().filter(|&&i| i < nl).copied().collect::<Vec<_>>(),
            used.iter().filter(|&&i| i >= nl).map(|&i| i - nl).collect::<Vec<_>>(),
        ];
        let field = |s: &JoinSide, i: usize| {
            s.schema.fields().get(i).map(|f| f.as_ref().clone().with_nullable(true)).ok_or_else(|| {
                RuntimeError::Internal(format!("the join condition reads column {i}, which its side does not have"))
            })
        };
        let mut fields = vec![];
        for &i in &cols[0] {
            fields.push(field(&spec.left, i)?);
        }
        for &i in &cols[1] {
            fields.push(field(&spec.right, i)?);
        }
        let expr = filter
            .clone()
            .transform(|e| match e.downcast_ref::<Column>() {
                Some(c) => {
                    let at = used.binary_search(&c.index()).unwrap_or(usize::MAX);
                    Ok(Transformed::yes(Arc::new(Column::new(c.name(), at)) as Arc<dyn PhysicalExpr>))
                }
                None => Ok(Transformed::no(e)),
            })
            .map_err(RuntimeError::expr("join condition"))?
            .data;
        Ok(Some(JoinFilter { expr, cols, schema: Arc::new(Schema::new(fields)) }))
    }
}
