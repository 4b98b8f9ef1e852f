//! `CASE x WHEN 'a' THEN '0' WHEN 'b' THEN '1' ... ELSE y END`, with every WHEN and THEN a
//! non-null literal and the ELSE a column, is evaluated as the same CASE without its ELSE and
//! then the ELSE column wherever that gave NULL (`ElseColumn`). DataFusion answers a CASE whose
//! branches are all literals with one hash lookup per row (its literal lookup table); with a
//! column ELSE it tests each WHEN in turn instead, copying the rows not yet matched after each one.
//! q21's `CASE lower(channel) WHEN 'apple' THEN '0' ... ELSE <the url's channel_id> END` is one.
//!
//! Invariants: the value is the CASE's: a row that matches a WHEN gets its THEN, which is never
//! NULL, so a NULL from the lookup means no WHEN matched, and such a row gets the ELSE column's
//! value. Reading a column cannot fail, so reading it for every row changes nothing else. The
//! expression displays as the original CASE (EXPLAIN is unchanged).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{is_not_null, kernels::zip::zip};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CaseExpr, Column, Literal};
use std::fmt;
use std::sync::Arc;

/// `lookup`, or `otherwise` where `lookup` is NULL; shown as `original`.
#[derive(Debug)]
struct ElseColumn {
    lookup: Arc<dyn PhysicalExpr>,
    otherwise: Arc<dyn PhysicalExpr>,
    original: Arc<dyn PhysicalExpr>,
}

impl PartialEq for ElseColumn {
    fn eq(&self, other: &Self) -> bool {
        self.lookup.as_ref() == other.lookup.as_ref() && self.otherwise.as_ref() == other.otherwise.as_ref()
    }
}

impl Eq for ElseColumn {}

impl std::hash::Hash for ElseColumn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.lookup.hash(state);
        self.otherwise.hash(state);
    }
}

impl fmt::Display for ElseColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.original.fmt(f)
    }
}

impl PhysicalExpr for ElseColumn {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.otherwise.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.otherwise.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let n = batch.num_rows();
        let found = self.lookup.evaluate(batch)?.into_array(n)?;
        if found.null_count() == 0 {
            return Ok(ColumnarValue::Array(found));
        }
        let otherwise = self.otherwise.evaluate(batch)?.into_array(n)?;
        Ok(ColumnarValue::Array(zip(&is_not_null(&found)?, &found, &otherwise)?))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.lookup, &self.otherwise]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        match <[Arc<dyn PhysicalExpr>; 2]>::try_from(children) {
            Ok([lookup, otherwise]) => Ok(Arc::new(ElseColumn { lookup, otherwise, original: self.original.clone() })),
            Err(_) => datafusion::common::internal_err!("a CASE lookup has two children"),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.original.fmt_sql(f)
    }
}

/// The `ElseColumn` form of `e`, when it is such a CASE.
fn rewrite_one(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let Some(case) = e.downcast_ref::<CaseExpr>() else { return Ok(None) };
    let (Some(base), Some(otherwise)) = (case.expr(), case.else_expr()) else { return Ok(None) };
    let literal = |x: &Arc<dyn PhysicalExpr>| x.downcast_ref::<Literal>().map(|l| !l.value().is_null());
    let all_literal = case.when_then_expr().iter().all(|(w, t)| literal(w).is_some() && literal(t) == Some(true));
    if case.when_then_expr().len() < 2 || !all_literal || otherwise.downcast_ref::<Column>().is_none() {
        return Ok(None);
    }
    let lookup: Arc<dyn PhysicalExpr> =
        Arc::new(CaseExpr::try_new(Some(base.clone()), case.when_then_expr().to_vec(), None)?);
    if lookup.data_type(schema)? != otherwise.data_type(schema)? {
        return Ok(None);
    }
    Ok(Some(Arc::new(ElseColumn { lookup, otherwise: otherwise.clone(), original: e.clone() })))
}

/// DataFusion's physical expression for `e`, with such CASEs evaluated by lookup: every
/// expression a query or a computed column evaluates is compiled here.
pub(crate) fn compile(
    state: &datafusion::execution::SessionState,
    e: datafusion::logical_expr::Expr,
    schema: &datafusion::common::DFSchema,
) -> Result<Arc<dyn PhysicalExpr>> {
    rewrite(state.create_physical_expr(e, schema)?, schema.as_arrow())
}

/// `e` with every CASE of the form above evaluated by lookup.
fn rewrite(e: Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    e.transform_up(|x| match rewrite_one(&x, schema)? {
        Some(new) => Ok(Transformed::yes(new)),
        None => Ok(Transformed::no(x)),
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::scalar::ScalarValue;

    fn lit(s: Option<&str>) -> Arc<dyn PhysicalExpr> {
        Arc::new(Literal::new(ScalarValue::Utf8(s.map(str::to_string))))
    }

    fn case(thens: [Option<&str>; 2], otherwise: Option<Arc<dyn PhysicalExpr>>) -> Arc<dyn PhysicalExpr> {
        let base: Arc<dyn PhysicalExpr> = Arc::new(Column::new("c", 0));
        let whens = vec![(lit(Some("a")), lit(thens[0])), (lit(Some("b")), lit(thens[1]))];
        Arc::new(CaseExpr::try_new(Some(base), whens, otherwise).unwrap())
    }

    #[test]
    fn the_lookup_gives_what_the_case_gives() {
        let schema = Schema::new(vec![Field::new("c", DataType::Utf8, true), Field::new("y", DataType::Utf8, true)]);
        let c: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("z"), None, Some("a")]));
        let y: ArrayRef = Arc::new(StringArray::from(vec![Some("y0"), None, Some("y2"), Some("y3"), Some("y4")]));
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![c, y]).unwrap();
        let y_col: Arc<dyn PhysicalExpr> = Arc::new(Column::new("y", 1));
        let original = case([Some("0"), Some("1")], Some(y_col.clone()));
        let rewritten = rewrite(original.clone(), &schema).unwrap();
        assert!(rewritten.downcast_ref::<ElseColumn>().is_some(), "the CASE is rewritten");
        assert_eq!(rewritten.to_string(), original.to_string(), "and shows as before");
        let values = |e: &Arc<dyn PhysicalExpr>| {
            let a = e.evaluate(&batch).unwrap().into_array(5).unwrap();
            a.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
        };
        assert_eq!(values(&rewritten), values(&original));
        assert_eq!(
            values(&rewritten),
            [Some("0"), Some("1"), Some("y2"), Some("y3"), Some("0")].map(|v| v.map(String::from))
        );

        // A NULL THEN would read as "no WHEN matched", and an ELSE that is not a column could fail
        // on rows the CASE never evaluates it for: both are left as they are.
        let null_then = case([Some("0"), None], Some(y_col));
        assert!(rewrite(null_then, &schema).unwrap().downcast_ref::<CaseExpr>().is_some());
        let computed_else = case([Some("0"), Some("1")], Some(lit(Some("x"))));
        assert!(rewrite(computed_else, &schema).unwrap().downcast_ref::<CaseExpr>().is_some());
    }
}
