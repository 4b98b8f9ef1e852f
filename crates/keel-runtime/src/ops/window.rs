//! Window assignment: appends `window_start`, `window_end` and `window_time` to every row, once
//! per window the row belongs to (HOP and CUMULATE repeat a row), as Flink's window TVFs do.
//! Stateless. Rows whose time is NULL belong to no window and are dropped (as in Flink).
//!
//! Invariant: memory is bounded whatever the windows per row (at most
//! `keel_types::window::MAX_WINDOWS_PER_ROW`): a batch whose rows are repeated is given out in
//! pieces of at most `MAX_ASSIGNED_ROWS` rows (`Operator::more_output`), each passed on before
//! the next is built; a row's windows are never split between pieces.

use crate::error::{Result, RuntimeError};
use crate::operator::Operator;
use arrow::array::{Array, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use keel_types::WindowSpec;
use std::sync::Arc;

/// The most rows one output batch of the assigner holds when it repeats rows (HOP, CUMULATE):
/// 65,536, so an 8,192-row batch in windows of size / slide up to 8 stays one batch.
pub const MAX_ASSIGNED_ROWS: usize = 1 << 16;

/// An input batch being given out in pieces.
struct Pending {
    batch: RecordBatch,
    times: TimestampMillisecondArray,
    /// The next input row to assign.
    next: usize,
}

pub struct WindowAssigner {
    pub spec: WindowSpec,
    /// Index of the time attribute column in the input.
    pub time_column: usize,
    /// Input schema plus the three window columns.
    pub schema: SchemaRef,
    pending: Option<Pending>,
}

impl WindowAssigner {
    pub fn new(spec: WindowSpec, time_column: usize, schema: SchemaRef) -> Self {
        WindowAssigner { spec, time_column, schema, pending: None }
    }

    /// The batch of `columns` (rows of the input) with the window columns of `ends` appended.
    fn with_windows(&self, mut cols: Vec<Arc<dyn Array>>, starts: Vec<i64>, ends: Vec<i64>) -> Result<RecordBatch> {
        let times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
        cols.push(Arc::new(TimestampMillisecondArray::from(starts)));
        cols.push(Arc::new(TimestampMillisecondArray::from(ends)));
        cols.push(Arc::new(TimestampMillisecondArray::from(times)));
        RecordBatch::try_new(self.schema.clone(), cols).map_err(RuntimeError::arrow("window assignment"))
    }
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
        let times = ts.as_primitive::<TimestampMillisecondType>().clone();
        if self.spec.windows_per_row() > 1 {
            self.pending = Some(Pending { batch, times, next: 0 });
            self.more_output(out)?;
            return Ok(());
        }
        // One window per row: the input's columns as they are (unless NULL times drop rows).
        let (mut idx, mut starts, mut ends) = (vec![], vec![], vec![]);
        for i in 0..batch.num_rows() {
            if times.is_null(i) {
                continue;
            }
            self.spec.assign(times.value(i), |s, e| {
                idx.push(i as u32);
                starts.push(s);
                ends.push(e);
            });
        }
        let cols = if idx.len() == batch.num_rows() {
            batch.columns().to_vec()
        } else {
            arrow::compute::take_record_batch(&batch, &UInt32Array::from(idx))
                .map_err(RuntimeError::arrow("window assignment"))?
                .columns()
                .to_vec()
        };
        let b = self.with_windows(cols, starts, ends)?;
        if b.num_rows() > 0 {
            out.push(b);
        }
        Ok(())
    }

    fn more_output(&mut self, out: &mut Vec<RecordBatch>) -> Result<bool> {
        let Some(p) = self.pending.as_mut() else { return Ok(false) };
        let per_row = self.spec.windows_per_row();
        let rows = p.batch.num_rows();
        let room = MAX_ASSIGNED_ROWS.min((rows - p.next).saturating_mul(per_row));
        let (mut idx, mut starts, mut ends) =
            (Vec::with_capacity(room), Vec::with_capacity(room), Vec::with_capacity(room));
        while p.next < rows && (idx.is_empty() || idx.len() + per_row <= MAX_ASSIGNED_ROWS) {
            let i = p.next;
            p.next += 1;
            if p.times.is_null(i) {
                continue;
            }
            self.spec.assign(p.times.value(i), |s, e| {
                idx.push(i as u32);
                starts.push(s);
                ends.push(e);
            });
        }
        let piece = if idx.is_empty() {
            None
        } else {
            let taken = arrow::compute::take_record_batch(&p.batch, &UInt32Array::from(idx))
                .map_err(RuntimeError::arrow("window assignment"))?;
            Some(taken.columns().to_vec())
        };
        if p.next >= rows {
            self.pending = None;
        }
        match piece {
            Some(cols) => {
                out.push(self.with_windows(cols, starts, ends)?);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    fn assigner(spec: WindowSpec) -> WindowAssigner {
        let ts = || Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true);
        let w = |n: &str| Field::new(n, DataType::Timestamp(TimeUnit::Millisecond, None), false);
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            ts(),
            w("window_start"),
            w("window_end"),
            w("window_time"),
        ]);
        WindowAssigner::new(spec, 1, Arc::new(schema))
    }

    fn input(times: &[Option<i64>]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        let k = Int64Array::from_iter_values(0..times.len() as i64);
        let ts = TimestampMillisecondArray::from(times.to_vec());
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(k), Arc::new(ts)]).unwrap()
    }

    /// (k, window_start, window_end) of every output row, as the task would pass the pieces on.
    fn assign_all(a: &mut WindowAssigner, batch: RecordBatch) -> (Vec<(i64, i64, i64)>, usize) {
        let mut out = vec![];
        a.process(batch, &mut out).unwrap();
        let mut pieces = out.len();
        let mut rows = vec![];
        loop {
            for b in out.drain(..) {
                assert!(b.num_rows() <= MAX_ASSIGNED_ROWS, "a piece of {} rows", b.num_rows());
                let k = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                let s = b.column(2).as_primitive::<TimestampMillisecondType>();
                let e = b.column(3).as_primitive::<TimestampMillisecondType>();
                rows.extend((0..b.num_rows()).map(|i| (k.value(i), s.value(i), e.value(i))));
            }
            if !a.more_output(&mut out).unwrap() {
                assert!(out.is_empty());
                return (rows, pieces);
            }
            pieces += 1;
        }
    }

    #[test]
    fn repeated_rows_come_out_in_bounded_pieces_each_row_once_per_window() {
        // A day of 10-second steps: 8,640 windows for a row at the start of the day.
        let spec = WindowSpec::Cumulate { step: 10_000, max: 86_400_000, offset: 0 };
        let mut a = assigner(spec);
        let times: Vec<Option<i64>> = (0..40).map(|i| if i == 7 { None } else { Some(i * 1_000) }).collect();
        let (rows, pieces) = assign_all(&mut a, input(&times));
        let mut want = vec![];
        for (k, t) in times.iter().enumerate() {
            if let Some(t) = t {
                spec.assign(*t, |s, e| want.push((k as i64, s, e)));
            }
        }
        // A row in the k-th 10 s of the day misses the first k windows: 10 rows each for k = 1, 2, 3.
        assert_eq!(want.len(), 39 * 8_640 - 60);
        assert_eq!(rows, want, "every (row, window) once, in input order");
        assert!(pieces >= want.len() / MAX_ASSIGNED_ROWS, "{pieces} pieces");
        // Nothing is left pending: the next batch starts afresh.
        let (again, _) = assign_all(&mut a, input(&[Some(5)]));
        assert_eq!(again.len(), 8_640);
        assert!(again.iter().all(|r| r.0 == 0));
    }

    #[test]
    fn one_window_per_row_keeps_the_batch_whole() {
        let mut a = assigner(WindowSpec::Tumble { size: 10, offset: 0 });
        let (rows, pieces) = assign_all(&mut a, input(&[Some(3), None, Some(12)]));
        assert_eq!(rows, vec![(0, 0, 10), (2, 10, 20)]);
        assert_eq!(pieces, 1);
    }
}
