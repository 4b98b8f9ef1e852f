//! Changelog streams: how an updating result (an unwindowed GROUP BY, a regular join, a Top-N)
//! travels between operators and reaches sinks.
//!
//! A changelog batch is an ordinary Arrow batch whose **last** column is `_op` (Int8, never
//! NULL) holding each row's kind, Flink's `RowKind`: `+I` insert, `-U` the row as it was before an
//! update, `+U` the row after it, `-D` delete. Every other column is data, so expressions planned
//! against the data columns (by index) run unchanged on a changelog batch.
//!
//! Invariants: an operator that emits a changelog emits, for one key, `-U old` immediately
//! before `+U new` in the same batch, and never a `-U`/`-D` for a row it did not emit before;
//! replaying a changelog in order (add on `+I`/`+U`, remove one equal row on `-U`/`-D`) gives the
//! current result table.

use crate::error::{Result, RuntimeError};
use arrow::array::{Array, ArrayRef, AsArray, Int8Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef};
use std::sync::Arc;

/// The name of the row-kind column, always the last column of a changelog batch.
pub const OP_COLUMN: &str = "_op";

/// The kind of a changelog row (Flink's `RowKind`), stored as its `i8` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum RowKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl RowKind {
    pub fn from_code(code: i8) -> Result<RowKind> {
        Ok(match code {
            0 => RowKind::Insert,
            1 => RowKind::UpdateBefore,
            2 => RowKind::UpdateAfter,
            3 => RowKind::Delete,
            other => return Err(RuntimeError::Internal(format!("row kind code {other} is not one of 0..=3"))),
        })
    }

    pub fn code(self) -> i8 {
        self as i8
    }

    /// `+I` and `+U` add a row to the result; `-U` and `-D` remove one.
    pub fn is_addition(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }

    /// Flink's short form: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }
}

/// The `_op` field.
pub fn op_field() -> Field {
    Field::new(OP_COLUMN, DataType::Int8, false)
}

/// `schema` with the `_op` field appended.
pub fn with_op_field(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(op_field());
    Arc::new(Schema::new(fields))
}

/// True when `schema` ends with the `_op` column.
pub fn is_changelog(schema: &Schema) -> bool {
    schema.fields().last().is_some_and(|f| f.name() == OP_COLUMN && f.data_type() == &DataType::Int8)
}

/// The row kinds of a changelog batch.
pub fn row_kinds(batch: &RecordBatch) -> Result<&Int8Array> {
    let last = batch.num_columns().checked_sub(1).map(|i| batch.column(i));
    match last {
        Some(c) if c.data_type() == &DataType::Int8 && c.null_count() == 0 => Ok(c.as_primitive::<Int8Type>()),
        _ => Err(RuntimeError::Internal("a changelog batch must end with a non-NULL Int8 _op column".into())),
    }
}

/// The data columns of a changelog batch (everything but `_op`).
pub fn data_columns(batch: &RecordBatch) -> &[ArrayRef] {
    let n = batch.num_columns().saturating_sub(1);
    &batch.columns()[..n]
}

/// A changelog batch from data columns and one kind per row, with `schema` (which ends in `_op`).
pub fn changelog_batch(schema: SchemaRef, mut columns: Vec<ArrayRef>, kinds: &[RowKind]) -> Result<RecordBatch> {
    columns.push(Arc::new(Int8Array::from_iter_values(kinds.iter().map(|k| k.code()))));
    RecordBatch::try_new(schema, columns).map_err(RuntimeError::arrow("building a changelog batch"))
}

/// Marks every row of an append-only batch as `+I` (the changelog view of an insert-only stream).
pub fn all_inserts(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = with_op_field(batch.schema().as_ref());
    changelog_batch(schema, batch.columns().to_vec(), &vec![RowKind::Insert; batch.num_rows()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn kinds_roundtrip_and_batches_end_in_op() {
        for k in [RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter, RowKind::Delete] {
            assert_eq!(RowKind::from_code(k.code()).unwrap(), k);
        }
        assert!(RowKind::from_code(4).is_err());
        let b = RecordBatch::try_from_iter(vec![("v", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)]).unwrap();
        let c = all_inserts(&b).unwrap();
        assert!(is_changelog(&c.schema()));
        assert!(!is_changelog(&b.schema()));
        assert_eq!(row_kinds(&c).unwrap().values().to_vec(), vec![0, 0]);
        assert_eq!(data_columns(&c).len(), 1);
        assert!(row_kinds(&b).is_err());
    }
}
