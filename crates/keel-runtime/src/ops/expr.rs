//! Filter and projection operators evaluating DataFusion physical expressions on each batch.
//! Stateless: they never snapshot anything.

use crate::error::{Result, RuntimeError};
use crate::operator::Operator;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use std::sync::Arc;

/// Keeps the rows for which `predicate` is true (NULL counts as false, as in SQL).
pub struct Filter {
    pub predicate: Arc<dyn PhysicalExpr>,
}

impl Operator for Filter {
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mask = self
            .predicate
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(RuntimeError::expr("WHERE"))?;
        let mask =
            mask.as_boolean_opt().ok_or_else(|| RuntimeError::Internal("filter predicate is not boolean".into()))?;
        // Batches the predicate keeps or drops whole (a source told which rows are wanted, or a
        // selective filter) skip the copy.
        match mask.true_count() {
            0 => {}
            t if t == batch.num_rows() => out.push(batch),
            _ => out.push(arrow::compute::filter_record_batch(&batch, mask).map_err(RuntimeError::arrow("filtering"))?),
        }
        Ok(())
    }
}

/// Computes one output column per expression.
pub struct Projection {
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub schema: SchemaRef,
}

impl Operator for Projection {
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let n = batch.num_rows();
        let mut cols = Vec::with_capacity(self.exprs.len());
        for (e, field) in self.exprs.iter().zip(self.schema.fields()) {
            let col = e
                .evaluate(&batch)
                .and_then(|v| v.into_array(n))
                .map_err(RuntimeError::expr(format!("computing {}", field.name())))?;
            let col = if col.data_type() == field.data_type() {
                col
            } else {
                arrow::compute::cast(&col, field.data_type())
                    .map_err(RuntimeError::arrow(format!("casting {}", field.name())))?
            };
            cols.push(col);
        }
        let b = RecordBatch::try_new(self.schema.clone(), cols).map_err(RuntimeError::arrow("projection"))?;
        out.push(b);
        Ok(())
    }
}
