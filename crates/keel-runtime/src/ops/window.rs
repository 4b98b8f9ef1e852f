//! Window assignment: appends `window_start`, `window_end` and `window_time` to every row, once
//! per window the row belongs to (HOP and CUMULATE repeat a row), as Flink's window TVFs do.
//! Stateless. Rows whose time is NULL belong to no window and are dropped (as in Flink).

use crate::error::{Result, RuntimeError};
use crate::operator::Operator;
use arrow::array::{Array, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use keel_types::WindowSpec;
use std::sync::Arc;

pub struct WindowAssigner {
    pub spec: WindowSpec,
    /// Index of the time attribute column in the input.
    pub time_column: usize,
    /// Input schema plus the three window columns.
    pub schema: SchemaRef,
}

impl Operator for WindowAssigner {
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let col = batch.column(self.time_column);
        let ts = if col.data_type() == &DataType::Timestamp(TimeUnit::Millisecond, None) {
            col.clone()
        } else {
            arrow::compute::cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .map_err(RuntimeError::arrow("casting the window time column"))?
        };
        let ts = ts.as_primitive::<TimestampMillisecondType>();
        let per_row = self.spec.windows_per_row();
        let mut idx = Vec::with_capacity(batch.num_rows() * per_row);
        let mut starts = Vec::with_capacity(batch.num_rows() * per_row);
        let mut ends = Vec::with_capacity(batch.num_rows() * per_row);
        for i in 0..batch.num_rows() {
            if ts.is_null(i) {
                continue;
            }
            self.spec.assign(ts.value(i), |s, e| {
                idx.push(i as u32);
                starts.push(s);
                ends.push(e);
            });
        }
        let mut cols: Vec<Arc<dyn Array>> = if per_row == 1 && idx.len() == batch.num_rows() {
            batch.columns().to_vec()
        } else {
            let take = UInt32Array::from(idx);
            arrow::compute::take_record_batch(&batch, &take)
                .map_err(RuntimeError::arrow("window assignment"))?
                .columns()
                .to_vec()
        };
        let times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
        cols.push(Arc::new(TimestampMillisecondArray::from(starts)));
        cols.push(Arc::new(TimestampMillisecondArray::from(ends)));
        cols.push(Arc::new(TimestampMillisecondArray::from(times)));
        let b = RecordBatch::try_new(self.schema.clone(), cols).map_err(RuntimeError::arrow("window assignment"))?;
        if b.num_rows() > 0 {
            out.push(b);
        }
        Ok(())
    }
}
