//! The `datagen` source: rows of random values for any schema, seeded and so repeatable, bounded
//! (`'number-of-rows'`) or not, and paced to `'rows-per-second'` in real time.
//!
//! Invariants: row `n` is a pure function of the seed, `n` and the column (its position), so the
//! rows are the same at any parallelism and after any restore; rows are spread over a fixed number
//! of splits (row `n` in split `n mod splits`) whose positions are checkpointed. A TIMESTAMP column
//! holds `start + n * 1000 / rows-per-second` ms (event time advances at the configured rate),
//! unlike Flink's datagen, which uses the wall clock and so cannot repeat. Memory is bounded: a
//! string is at most `MAX_STRING_LENGTH` characters (longer is refused at plan time) and a batch
//! holds at most `MAX_BATCH_STRING_BYTES` of strings (fewer rows when they are long).

use crate::splits::Splits;
use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, RecordBatch,
    StringBuilder, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use keel_runtime::{RestoredState, Result, RuntimeError, Source, SourcePoll, TaskContext, WatermarkStatus};
use keel_types::time::MIN_WATERMARK;
use std::sync::Arc;
use std::time::Instant;

/// The longest string a `datagen` column may be given (`'fields.COLUMN.length'`, in characters,
/// here ASCII letters, so also bytes): 1 MiB, as every single value Keel builds. A longer length
/// is refused when the pipeline is planned.
pub const MAX_STRING_LENGTH: usize = 1 << 20;

/// The most bytes of generated strings one batch holds: a table with long strings gets batches
/// of fewer rows than `'rows-per-batch'` (at least one row).
pub const MAX_BATCH_STRING_BYTES: usize = 16 << 20;

/// One column's generator settings.
#[derive(Debug, Clone, Default)]
pub struct FieldOptions {
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// String length.
    pub length: Option<usize>,
}

/// The generator's settings.
#[derive(Debug, Clone)]
pub struct DatagenConfig {
    pub table: String,
    pub schema: SchemaRef,
    pub fields: Vec<FieldOptions>,
    pub rows: Option<u64>,
    /// Rows per second, for pacing and for the spacing of timestamps; 0 = as fast as possible
    /// (timestamps then advance 1 ms per row).
    pub rate: u64,
    pub seed: u64,
    pub splits: u32,
    pub start_ms: i64,
    pub event_time: Option<(usize, i64)>,
    pub batch_size: usize,
}

pub struct DatagenSource {
    cfg: DatagenConfig,
    splits: Option<Splits>,
    cursor: usize,
    started: Instant,
    emitted_here: u64,
    parallelism: u32,
}

fn mix(seed: u64, n: u64, col: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ col.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl DatagenSource {
    pub fn new(cfg: DatagenConfig) -> Self {
        DatagenSource { cfg, splits: None, cursor: 0, started: Instant::now(), emitted_here: 0, parallelism: 1 }
    }

    /// How many rows keep a batch's strings within `MAX_BATCH_STRING_BYTES` (at least one).
    fn rows_within_batch_bytes(&self) -> usize {
        let row_bytes: usize = (self.cfg.schema.fields().iter().enumerate())
            .filter(|(_, f)| f.data_type() == &DataType::Utf8)
            .map(|(i, _)| self.cfg.fields.get(i).and_then(|o| o.length).unwrap_or(16))
            .sum();
        (MAX_BATCH_STRING_BYTES / row_bytes.max(1)).max(1)
    }

    fn timestamp(&self, n: u64) -> i64 {
        let step = if self.cfg.rate == 0 { 1.0 } else { 1000.0 / self.cfg.rate as f64 };
        self.cfg.start_ms + (n as f64 * step) as i64
    }

    fn column(&self, col: usize, t: &DataType, rows: &[u64]) -> std::result::Result<ArrayRef, String> {
        let f = self.cfg.fields.get(col).cloned().unwrap_or_default();
        let seed = self.cfg.seed;
        let unit = |n: u64| (mix(seed, n, col as u64) >> 11) as f64 / (1u64 << 53) as f64;
        let int = |n: u64, lo: f64, hi: f64| {
            let (lo, hi) = (f.min.unwrap_or(lo), f.max.unwrap_or(hi));
            (lo + (unit(n) * (hi - lo + 1.0)).floor()).min(hi) as i64
        };
        Ok(match t {
            DataType::Int8 => Arc::new(Int8Array::from_iter_values(rows.iter().map(|&n| int(n, -128.0, 127.0) as i8))),
            DataType::Int16 => {
                Arc::new(Int16Array::from_iter_values(rows.iter().map(|&n| int(n, -32768.0, 32767.0) as i16)))
            }
            DataType::Int32 => Arc::new(Int32Array::from_iter_values(rows.iter().map(|&n| int(n, -1e9, 1e9) as i32))),
            DataType::Int64 => Arc::new(Int64Array::from_iter_values(rows.iter().map(|&n| int(n, -1e15, 1e15)))),
            DataType::Float32 => {
                let (lo, hi) = (f.min.unwrap_or(0.0), f.max.unwrap_or(1.0));
                Arc::new(Float32Array::from_iter_values(rows.iter().map(|&n| (lo + unit(n) * (hi - lo)) as f32)))
            }
            DataType::Float64 => {
                let (lo, hi) = (f.min.unwrap_or(0.0), f.max.unwrap_or(1.0));
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|&n| lo + unit(n) * (hi - lo))))
            }
            DataType::Boolean => {
                Arc::new(BooleanArray::from_iter(rows.iter().map(|&n| Some(mix(seed, n, col as u64) & 1 == 1))))
            }
            DataType::Utf8 => {
                let len = f.length.unwrap_or(16);
                if len > MAX_STRING_LENGTH {
                    return Err(format!(
                        "a string length of {len} is over the limit of {MAX_STRING_LENGTH} characters per value"
                    ));
                }
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * len);
                let mut s = String::with_capacity(len);
                for &n in rows {
                    s.clear();
                    let mut z = mix(seed, n, col as u64);
                    for i in 0..len {
                        if i % 10 == 0 && i > 0 {
                            z = mix(z, n, i as u64);
                        }
                        s.push((b'a' + (z % 26) as u8) as char);
                        z /= 26;
                    }
                    b.append_value(&s);
                }
                Arc::new(b.finish())
            }
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|&n| self.timestamp(n))))
            }
            other => {
                return Err(format!(
                    "datagen cannot generate a {other} column; use integers, floats, BOOLEAN, VARCHAR or TIMESTAMP(3)"
                ));
            }
        })
    }
}

/// Checks that every column of `schema` can be generated.
pub fn check_schema(schema: &SchemaRef) -> std::result::Result<(), String> {
    let cfg = DatagenConfig {
        table: String::new(),
        schema: schema.clone(),
        fields: vec![],
        rows: Some(1),
        rate: 0,
        seed: 0,
        splits: 1,
        start_ms: 0,
        event_time: None,
        batch_size: 1,
    };
    let src = DatagenSource::new(cfg);
    for (i, f) in schema.fields().iter().enumerate() {
        src.column(i, f.data_type(), &[0]).map_err(|e| format!("column {}: {e}", f.name()))?;
    }
    Ok(())
}

impl Source for DatagenSource {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.splits = Some(Splits::restore(&self.cfg.table, self.cfg.splits, self.cfg.rows, ctx, &restored)?);
        self.parallelism = ctx.parallelism;
        self.started = Instant::now();
        self.emitted_here = 0;
        Ok(())
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        if self.cfg.rate > 0 {
            // Pace this subtask to its share of the rate.
            let allowed = self.started.elapsed().as_secs_f64() * self.cfg.rate as f64 / f64::from(self.parallelism);
            if self.emitted_here as f64 >= allowed {
                return Ok(SourcePoll::Pending);
            }
        }
        let mut splits =
            self.splits.take().ok_or_else(|| RuntimeError::Internal("datagen source used before open".into()))?;
        let result = self.poll_splits(&mut splits);
        self.splits = Some(splits);
        result
    }

    fn watermark(&self) -> WatermarkStatus {
        self.splits.as_ref().map_or(WatermarkStatus::Idle(MIN_WATERMARK), |s| s.watermark(self.cfg.event_time))
    }

    fn snapshot(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.splits.as_ref().map_or(Ok(Vec::new()), Splits::snapshot)
    }
}

impl DatagenSource {
    fn poll_splits(&mut self, splits: &mut Splits) -> Result<SourcePoll> {
        let n = splits.len();
        for _ in 0..n {
            let idx = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            if splits.finished(idx) {
                continue;
            }
            let mut rows = vec![];
            let limit = if self.cfg.rate > 0 {
                self.cfg.batch_size.min((self.cfg.rate / 10).max(1) as usize)
            } else {
                self.cfg.batch_size
            };
            let limit = limit.min(self.rows_within_batch_bytes());
            while rows.len() < limit && !splits.finished(idx) {
                let row = splits.next_number(idx);
                rows.push(row);
                splits.advance(idx, 1, self.timestamp(row));
            }
            let cols = self
                .cfg
                .schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| self.column(i, f.data_type(), &rows))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| RuntimeError::User(format!("table {}: {e}", self.cfg.table)))?;
            let batch = RecordBatch::try_new(self.cfg.schema.clone(), cols).map_err(RuntimeError::arrow("datagen"))?;
            self.emitted_here += rows.len() as u64;
            return Ok(SourcePoll::Batch(batch));
        }
        if self.cfg.rows.is_some() {
            return Ok(SourcePoll::Exhausted);
        }
        Ok(SourcePoll::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Int64Type, Schema};

    fn config(seed: u64, rows: Option<u64>, rate: u64) -> DatagenConfig {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
            Field::new("x", DataType::Float64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        ]));
        DatagenConfig {
            table: "t".into(),
            schema,
            fields: vec![
                FieldOptions { min: Some(5.0), max: Some(9.0), length: None },
                FieldOptions { length: Some(12), ..FieldOptions::default() },
                FieldOptions { min: Some(2.0), max: Some(3.0), length: None },
                FieldOptions::default(),
            ],
            rows,
            rate,
            seed,
            splits: 2,
            start_ms: 1_000,
            event_time: None,
            batch_size: 64,
        }
    }

    /// Polls until the source is exhausted (or `max` polls); returns the batches.
    fn drain(source: &mut DatagenSource, max: usize) -> (Vec<RecordBatch>, bool) {
        let mut out = vec![];
        for _ in 0..max {
            match source.poll().unwrap() {
                SourcePoll::Batch(b) => out.push(b),
                SourcePoll::Exhausted => return (out, true),
                _ => break,
            }
        }
        (out, false)
    }

    fn open(cfg: DatagenConfig) -> DatagenSource {
        let mut s = DatagenSource::new(cfg);
        s.open(&crate::upsert::tests::ctx(std::path::Path::new(".")), RestoredState::default()).unwrap();
        s
    }

    #[test]
    fn rows_are_seeded_bounded_and_within_their_options() {
        let (batches, done) = drain(&mut open(config(7, Some(500), 0)), 1000);
        assert!(done, "a bounded generator ends");
        let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(all.num_rows(), 500);
        let k = all.column(0).as_primitive::<Int64Type>();
        assert!(k.values().iter().all(|v| (5..=9).contains(v)), "integers within min and max");
        assert!((5..=9).all(|v| k.values().contains(&v)), "every value of the range comes up in 500 rows");
        let s = all.column(1).as_string::<i32>();
        assert!(s.iter().flatten().all(|v| v.len() == 12 && v.bytes().all(|b| b.is_ascii_lowercase())));
        let x = all.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        assert!(x.values().iter().all(|v| (2.0..3.0).contains(v)));
        // Without a rate, row n is at start + n ms: every timestamp once.
        let mut ts = all.column(3).as_primitive::<arrow::datatypes::TimestampMillisecondType>().values().to_vec();
        ts.sort_unstable();
        assert_eq!(ts, (1_000..1_500).collect::<Vec<i64>>());
        // The same seed gives the same rows, another seed other rows.
        let again = drain(&mut open(config(7, Some(500), 0)), 1000).0;
        assert_eq!(arrow::compute::concat_batches(&batches[0].schema(), &again).unwrap(), all);
        let other = drain(&mut open(config(8, Some(500), 0)), 1000).0;
        assert_ne!(arrow::compute::concat_batches(&batches[0].schema(), &other).unwrap().column(1), all.column(1));
    }

    #[test]
    fn long_strings_make_smaller_batches_so_a_batch_stays_bounded() {
        let mut cfg = config(3, Some(40), 0);
        cfg.fields[1].length = Some(MAX_STRING_LENGTH);
        cfg.batch_size = 8192;
        let (batches, done) = drain(&mut open(cfg), 100);
        assert!(done);
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 40, "every row still comes");
        for b in &batches {
            let bytes = b.column(1).as_string::<i32>().value_data().len();
            assert!(bytes <= MAX_BATCH_STRING_BYTES, "{} rows, {bytes} bytes of strings in one batch", b.num_rows());
            assert!(b.column(1).as_string::<i32>().iter().flatten().all(|v| v.len() == MAX_STRING_LENGTH));
        }
    }

    #[test]
    fn a_rate_holds_rows_back_and_an_unbounded_generator_never_ends() {
        let started = Instant::now();
        let mut source = open(config(1, None, 1_000));
        // Polled as fast as possible: rows come no faster than the rate allows, one batch (a tenth
        // of a second's worth) ahead at most.
        let (batches, done) = drain(&mut source, 10_000);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let allowed = started.elapsed().as_secs_f64() * 1_000.0 + 100.0;
        assert!(!done, "no row count: never exhausted");
        assert!((rows as f64) <= allowed, "{rows} rows in {:?} at 1000 rows/s", started.elapsed());
        assert!(batches.iter().all(|b| b.num_rows() <= 100), "a paced batch is a tenth of a second of rows");
        // Row n is at start + n * 1000 / rate ms (1 ms here); a batch is rows of one split, every
        // second number.
        let ts = batches[0].column(3).as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert!(ts.values().windows(2).all(|w| w[1] - w[0] == 2), "{:?}", &ts.values()[..4]);
    }
}
