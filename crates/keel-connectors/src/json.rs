//! JSON lines: decoding record values into Arrow batches of a table's schema (isolating records
//! that do not decode), and encoding batches as JSON lines with ISO-8601 UTC timestamps.
//!
//! Decoding accepts, for TIMESTAMP columns, RFC 3339 / ISO-8601 strings (with `T` or a space,
//! optional fraction, optional zone), `YYYY-MM-DD HH:MM:SS[.fff]`, and numbers as epoch
//! milliseconds. Invariant: every input record either becomes exactly one row or is reported as
//! bad with its reason; one bad record never spoils its neighbours. A record nested deeper than
//! `MAX_JSON_DEPTH` is bad without being decoded, so no record can exhaust the stack.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::json::reader::{Decoder, ReaderBuilder};
use std::fmt::Write as _;

/// The deepest nesting of arrays and objects a JSON record may have, its own object being level
/// 1: serde_json's default limit. A deeper record is a bad record (dead letter, skip or fail by
/// the table's 'bad-records' policy) and is never given to the decoder, whose error messages
/// recursed once per level (50,000 levels overflowed the stack and aborted the process).
pub const MAX_JSON_DEPTH: usize = 128;

/// Why `value` is refused for nesting deeper than `MAX_JSON_DEPTH`, or `None` when it is not.
/// A record with no more opening brackets than the limit cannot be deeper; only a record with
/// more is scanned exactly (outside strings, minding escapes), so the common case is one count
/// of two byte values, which the compiler vectorizes.
fn too_deep(value: &[u8]) -> Option<String> {
    let opening = value.iter().fold(0usize, |n, &b| n + usize::from(b == b'{' || b == b'['));
    if opening <= MAX_JSON_DEPTH {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, &b) in value.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Some(format!(
                        "the record nests arrays and objects deeper than {MAX_JSON_DEPTH} levels (at byte {at}), \
                         Keel's limit for a JSON record"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Decodes JSON record values into batches of one schema.
pub struct JsonDecoder {
    schema: SchemaRef,
    decoder: Decoder,
    buf: Vec<u8>,
    /// The schema has a DECIMAL column: numbers are checked first (`crate::numbers`).
    decimals: bool,
}

/// The outcome of decoding a set of records.
pub struct Decoded {
    /// One row per good record, in input order.
    pub batch: RecordBatch,
    /// Index in the input of each row of `batch`.
    pub rows: Vec<usize>,
    /// Input index and reason of each bad record.
    pub bad: Vec<(usize, String)>,
}

fn new_decoder(schema: &SchemaRef, batch_size: usize) -> Result<Decoder, String> {
    ReaderBuilder::new(schema.clone()).with_batch_size(batch_size.max(1)).build_decoder().map_err(|e| e.to_string())
}

impl JsonDecoder {
    pub fn new(schema: SchemaRef) -> Result<Self, String> {
        let decoder = new_decoder(&schema, 8192)?;
        let decimals = crate::numbers::has_decimal(&schema);
        Ok(JsonDecoder { schema, decoder, buf: Vec::new(), decimals })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes each value as one JSON object.
    pub fn decode(&mut self, values: &[&[u8]]) -> Result<Decoded, String> {
        if values.is_empty() {
            return Ok(Decoded { batch: RecordBatch::new_empty(self.schema.clone()), rows: vec![], bad: vec![] });
        }
        // Records nested too deeply are never decoded (see MAX_JSON_DEPTH), nor numbers a
        // DECIMAL column cannot take (`crate::numbers`).
        let refused =
            |v: &[u8]| too_deep(v).or_else(|| if self.decimals { crate::numbers::huge_exponent_json(v) } else { None });
        let refusals: Vec<(usize, String)> =
            values.iter().enumerate().filter_map(|(i, v)| refused(v).map(|reason| (i, reason))).collect();
        if refusals.is_empty() {
            self.decoder = new_decoder(&self.schema, values.len())?;
            if let Ok(batch) = self.decode_all(values)
                && batch.num_rows() == values.len()
            {
                return Ok(Decoded { batch, rows: (0..values.len()).collect(), bad: vec![] });
            }
        }
        // Slow path: find the bad ones one by one, then decode the good ones together.
        let mut good = vec![];
        let mut bad = vec![];
        let mut refusals = refusals.into_iter().peekable();
        for (i, v) in values.iter().enumerate() {
            if let Some((_, reason)) = refusals.next_if(|d| d.0 == i) {
                bad.push((i, reason));
                continue;
            }
            self.decoder = new_decoder(&self.schema, 2)?;
            match self.decode_all(&[v]) {
                Ok(b) if b.num_rows() == 1 => good.push(i),
                Ok(b) if b.num_rows() == 0 => bad.push((i, "the record is empty, not a JSON object".to_string())),
                Ok(_) => bad.push((i, "the record holds more than one JSON value".to_string())),
                Err(e) => bad.push((i, e)),
            }
        }
        self.decoder = new_decoder(&self.schema, good.len())?;
        let vals: Vec<&[u8]> = good.iter().map(|&i| values[i]).collect();
        let batch = if vals.is_empty() { RecordBatch::new_empty(self.schema.clone()) } else { self.decode_all(&vals)? };
        Ok(Decoded { batch, rows: good, bad })
    }

    fn decode_all(&mut self, values: &[&[u8]]) -> Result<RecordBatch, String> {
        // One contiguous newline-separated buffer: one decoder call for the whole set.
        let total: usize = values.iter().map(|v| v.len() + 1).sum();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(total);
        for v in values {
            let first = v.iter().find(|b| !b.is_ascii_whitespace());
            match first {
                Some(b'{') => {}
                Some(_) => return Err("the record is not a JSON object".into()),
                None => return Err("the record is empty, not a JSON object".into()),
            }
            buf.extend_from_slice(v);
            buf.push(b'\n');
        }
        let mut rest: &[u8] = &buf;
        while !rest.is_empty() {
            // A panic in the decoder (a bug of arrow-json's on some input) is this set's error;
            // the decoder is rebuilt before its next use.
            let n = keel_types::guard::no_panic("the JSON decoder", || self.decoder.decode(rest))?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the decoder made no progress".into());
            }
            rest = &rest[n..];
        }
        self.buf = buf;
        match keel_types::guard::no_panic("the JSON decoder", || self.decoder.flush())?.map_err(|e| e.to_string())? {
            Some(b) => Ok(b),
            None => Ok(RecordBatch::new_empty(self.schema.clone())),
        }
    }
}

/// Appends row `row` of `batch` as one JSON object (no newline) to `out`.
pub fn encode_row(batch: &RecordBatch, row: usize, out: &mut String) {
    out.push('{');
    for (c, field) in batch.schema().fields().iter().enumerate() {
        if c > 0 {
            out.push(',');
        }
        write_json_string(field.name(), out);
        out.push(':');
        write_value(batch.column(c).as_ref(), row, out);
    }
    out.push('}');
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends one value as JSON. Timestamps are ISO-8601 in UTC.
pub fn write_value(col: &dyn Array, row: usize, out: &mut String) {
    use arrow::datatypes::*;
    if col.is_null(row) {
        out.push_str("null");
        return;
    }
    match col.data_type() {
        DataType::Utf8 => write_json_string(col.as_string::<i32>().value(row), out),
        DataType::LargeUtf8 => write_json_string(col.as_string::<i64>().value(row), out),
        DataType::Utf8View => write_json_string(col.as_string_view().value(row), out),
        DataType::Boolean => out.push_str(if col.as_boolean().value(row) { "true" } else { "false" }),
        DataType::Int8 => push_num(out, col.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => push_num(out, col.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => push_num(out, col.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => push_num(out, col.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => push_num(out, col.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => push_num(out, col.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => push_num(out, col.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => push_num(out, col.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => push_float(out, f64::from(col.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => push_float(out, col.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => col.as_primitive::<TimestampSecondType>().value(row).saturating_mul(1000),
                TimeUnit::Millisecond => col.as_primitive::<TimestampMillisecondType>().value(row),
                TimeUnit::Microsecond => col.as_primitive::<TimestampMicrosecondType>().value(row) / 1000,
                TimeUnit::Nanosecond => col.as_primitive::<TimestampNanosecondType>().value(row) / 1_000_000,
            };
            out.push('"');
            keel_types::time::write_timestamp_ms(v, out);
            out.push('"');
        }
        _ => {
            // Decimals, dates and the rest: Arrow's display form, quoted unless numeric.
            let s = arrow::util::display::array_value_to_string(col, row).unwrap_or_default();
            if matches!(col.data_type(), DataType::Decimal128(_, _) | DataType::Decimal256(_, _)) {
                out.push_str(&s);
            } else {
                write_json_string(&s, out);
            }
        }
    }
}

fn push_num(out: &mut String, v: impl std::fmt::Display) {
    let _ = write!(out, "{v}");
}

fn push_float(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

/// True when a schema column is a timestamp (used to explain decode errors).
pub fn is_timestamp(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema, TimeUnit, TimestampMillisecondType};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("amount", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    #[test]
    fn timestamps_in_all_accepted_forms() {
        let mut d = JsonDecoder::new(schema()).unwrap();
        let inputs: Vec<&[u8]> = vec![
            br#"{"user_id":"a","amount":1,"ts":"2024-01-01T00:00:10.5Z"}"#,
            br#"{"user_id":"a","amount":1,"ts":"2024-01-01T00:00:10.500"}"#,
            br#"{"user_id":"a","amount":1,"ts":"2024-01-01 00:00:10.500"}"#,
            br#"{"user_id":"a","amount":1,"ts":1704067210500}"#,
        ];
        let out = d.decode(&inputs).unwrap();
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        let ts = out.batch.column(2).as_primitive::<TimestampMillisecondType>();
        for i in 0..4 {
            assert_eq!(ts.value(i), 1_704_067_210_500, "form {i}");
        }
    }

    #[test]
    fn bad_records_are_isolated_with_reasons() {
        let mut d = JsonDecoder::new(schema()).unwrap();
        let inputs: Vec<&[u8]> = vec![
            br#"{"user_id":"a","amount":1,"ts":0}"#,
            br#"{"user_id":"b","amount":"lots","ts":0}"#,
            br#"not json"#,
            br#"{"user_id":"c","amount":3,"ts":0}"#,
            br#"{"user_id":"d"} {"user_id":"e"}"#,
        ];
        let out = d.decode(&inputs).unwrap();
        assert_eq!(out.rows, vec![0, 3]);
        assert_eq!(out.bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert!(out.bad[0].1.to_lowercase().contains("lots") || out.bad[0].1.contains("amount"), "{}", out.bad[0].1);
        assert_eq!(out.batch.num_rows(), 2);
    }

    #[test]
    fn deeply_nested_records_are_bad_records_naming_the_limit() {
        // Before the depth limit, building the error message for such a record recursed once per
        // level and overflowed the stack, aborting the process: run it where that cannot kill
        // the test binary.
        if keel_types::test_child::run_in_child("json::tests::deeply_nested_records_are_bad_records_naming_the_limit") {
            return;
        }
        let nested = |open: &str, close: &str, levels: usize| {
            format!(r#"{{"user_id":{}1{},"amount":1,"ts":0}}"#, open.repeat(levels), close.repeat(levels))
        };
        let good = r#"{"user_id":"a","amount":1,"ts":0}"#.to_string();
        let arrays = nested("[", "]", 50_000);
        let objects = nested(r#"{"a":"#, "}", 50_000);
        // The record's own object is level 1: an unknown field nesting MAX - 1 arrays is at the
        // limit and decodes (unknown fields are ignored); one more level is over it.
        let extra = |levels: usize| {
            format!(r#"{{"user_id":"b","amount":2,"ts":0,"x":{}{}}}"#, "[".repeat(levels), "]".repeat(levels))
        };
        let at_limit = extra(MAX_JSON_DEPTH - 1);
        let over_limit = extra(MAX_JSON_DEPTH);
        // Brackets inside strings (escaped quotes too) are text, not nesting.
        let in_string = format!(r#"{{"user_id":"\"{}","amount":3,"ts":0}}"#, "[{".repeat(100_000));
        let inputs: Vec<&[u8]> = vec![
            good.as_bytes(),
            arrays.as_bytes(),
            objects.as_bytes(),
            at_limit.as_bytes(),
            over_limit.as_bytes(),
            in_string.as_bytes(),
        ];
        let out = JsonDecoder::new(schema()).unwrap().decode(&inputs).unwrap();
        assert_eq!(out.rows, vec![0, 3, 5]);
        assert_eq!(out.bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![1, 2, 4]);
        for (_, reason) in &out.bad {
            assert!(reason.contains(&format!("deeper than {MAX_JSON_DEPTH} levels")), "{reason}");
        }
        let amounts = out.batch.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(amounts.values().to_vec(), vec![1, 2, 3]);
    }

    #[test]
    fn nesting_depth_is_counted_outside_strings_only() {
        let over = |s: &str| too_deep(s.as_bytes()).is_some();
        let deep = "[".repeat(MAX_JSON_DEPTH + 1);
        assert!(over(&deep), "unclosed brackets count as they open");
        assert!(!over(&"[".repeat(MAX_JSON_DEPTH)), "exactly the limit is allowed");
        assert!(!over(&format!("\"{deep}\"")), "inside a string");
        assert!(!over(&format!("\"\\\"{deep}\"")), "after an escaped quote, still inside the string");
        assert!(over(&format!("\"\\\\\"{deep}")), "an escaped backslash ends before the closing quote");
        // Closed levels do not add up: many shallow values side by side are fine.
        assert!(!over(&"[[]]".repeat(10 * MAX_JSON_DEPTH)));
    }

    #[test]
    fn encodes_iso_utc_and_escapes() {
        let b = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(arrow::array::StringArray::from(vec![Some("q\"x")])),
                Arc::new(arrow::array::Int64Array::from(vec![None])),
                Arc::new(arrow::array::TimestampMillisecondArray::from(vec![10_000])),
            ],
        )
        .unwrap();
        let mut s = String::new();
        encode_row(&b, 0, &mut s);
        assert_eq!(s, r#"{"user_id":"q\"x","amount":null,"ts":"1970-01-01T00:00:10.000Z"}"#);
    }
}
