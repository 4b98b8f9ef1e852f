//! How sinks write changelogs (updating results): splitting a batch into its data rows and their
//! row kinds, Flink's debezium-json envelope, the upsert record of a keyed row, and the print
//! form of a row.
//!
//! Invariants: the data of a row is always encoded exactly as the `json` format encodes a row of
//! the data columns (the `_op` column never appears in output); an append-only batch reads as a
//! changelog of inserts (`+I`), so sinks that accept updates accept insert-only input unchanged;
//! a sink that writes an append-only format refuses a changelog batch with an internal error
//! naming the sink (the planner refuses such pipelines before they run).

use crate::json::{encode_row, write_value};
use arrow::array::{Array, Int8Array, RecordBatch};
use arrow::datatypes::DataType;
use keel_runtime::changelog::{RowKind, is_changelog, row_kinds};
use keel_runtime::{Result, RuntimeError};

/// A batch seen as changes: its data columns and, for a changelog batch, each row's kind.
pub struct Changes {
    /// The data columns only (a changelog batch without `_op`; an append-only batch as it is).
    pub data: RecordBatch,
    kinds: Option<Int8Array>,
}

impl Changes {
    /// Splits a changelog batch at its `_op` column; an append-only batch is all inserts.
    pub fn of(batch: &RecordBatch) -> Result<Changes> {
        if !is_changelog(batch.schema().as_ref()) {
            return Ok(Changes { data: batch.clone(), kinds: None });
        }
        let kinds = row_kinds(batch)?.clone();
        let data_cols: Vec<usize> = (0..batch.num_columns() - 1).collect();
        let data = batch.project(&data_cols).map_err(RuntimeError::arrow("dropping the _op column"))?;
        Ok(Changes { data, kinds: Some(kinds) })
    }

    /// True when the batch was a changelog (ended with `_op`).
    pub fn is_changelog(&self) -> bool {
        self.kinds.is_some()
    }

    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    /// The kind of row `row`: `+I` for every row of an append-only batch.
    pub fn kind(&self, row: usize) -> Result<RowKind> {
        match &self.kinds {
            None => Ok(RowKind::Insert),
            Some(k) => RowKind::from_code(k.value(row)),
        }
    }
}

/// Fails when a sink that writes an append-only format is given a changelog batch.
pub fn ensure_append_only(batch: &RecordBatch, sink: &str) -> Result<()> {
    if is_changelog(batch.schema().as_ref()) {
        return Err(RuntimeError::Internal(format!(
            "{sink} writes an append-only format but received a changelog (updating) batch; \
             the planner should have refused this pipeline"
        )));
    }
    Ok(())
}

/// Appends Flink's debezium-json envelope of row `row` of `data` (data columns only): `+I`/`+U`
/// become `{"before":null,"after":{row},"op":"c"}`, `-U`/`-D` become
/// `{"before":{row},"after":null,"op":"d"}`. `row_json` is the row as `encode_row` writes it.
pub fn write_debezium(row_json: &str, kind: RowKind, out: &mut String) {
    if kind.is_addition() {
        out.push_str("{\"before\":null,\"after\":");
        out.push_str(row_json);
        out.push_str(",\"op\":\"c\"}");
    } else {
        out.push_str("{\"before\":");
        out.push_str(row_json);
        out.push_str(",\"after\":null,\"op\":\"d\"}");
    }
}

/// Appends the debezium-json envelope of row `row` of `data` (data columns only).
pub fn encode_debezium(data: &RecordBatch, row: usize, kind: RowKind, out: &mut String) {
    let mut row_json = String::new();
    encode_row(data, row, &mut row_json);
    write_debezium(&row_json, kind, out);
}

/// The upsert record of one changelog row: the key, and `Some(value)` to write, `None` for a
/// tombstone; `Skip` for `-U` (the `+U` that follows overwrites the key).
#[derive(Debug, PartialEq, Eq)]
pub enum UpsertRecord {
    Put { key: String, value: String },
    Tombstone { key: String },
    Skip,
}

/// The upsert record of row `row` on its own: the key is the JSON object of the `key` columns
/// of `data`, the value the JSON row for `+I`/`+U`, a tombstone for `-D`, nothing for `-U`
/// (`upsert_batch` decides what a `-U` becomes).
pub fn upsert_record(data: &RecordBatch, key: &RecordBatch, row: usize, kind: RowKind) -> UpsertRecord {
    let mut k = String::new();
    match kind {
        RowKind::UpdateBefore => UpsertRecord::Skip,
        RowKind::Delete => {
            encode_row(key, row, &mut k);
            UpsertRecord::Tombstone { key: k }
        }
        RowKind::Insert | RowKind::UpdateAfter => {
            encode_row(key, row, &mut k);
            let mut value = String::new();
            encode_row(data, row, &mut value);
            UpsertRecord::Put { key: k, value }
        }
    }
}

/// The upsert records of a batch, in order: `(key, Some(value))` to write a row, `(key, None)` for
/// a tombstone. A `-U` is dropped when a `+I`/`+U` of the same key follows it in the batch (that
/// row overwrites the key); a `-U` with no such row after it (a filter after an aggregate dropped
/// the `+U`, so the row left the result) becomes a tombstone, as a `-D` does.
pub fn upsert_batch(changes: &Changes, key: &RecordBatch) -> Result<Vec<(String, Option<String>)>> {
    let mut out: Vec<Option<(String, Option<String>)>> = Vec::with_capacity(changes.num_rows());
    // Keys whose last record so far is the tombstone of a `-U`, with its index in `out`.
    let mut pending: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in 0..changes.num_rows() {
        let kind = changes.kind(row)?;
        let mut k = String::new();
        encode_row(key, row, &mut k);
        if let Some(i) = pending.remove(&k) {
            // A later change of the key replaces the tentative tombstone of its `-U`.
            out[i] = None;
        }
        match upsert_record(&changes.data, key, row, kind) {
            UpsertRecord::Put { key, value } => out.push(Some((key, Some(value)))),
            UpsertRecord::Tombstone { key } => out.push(Some((key, None))),
            UpsertRecord::Skip => {
                pending.insert(k.clone(), out.len());
                out.push(Some((k, None)));
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Appends row `row` of `data` as Flink's print connector does: `KIND[v1, v2, ...]` with
/// `KIND` one of `+I`, `-U`, `+U`, `-D`; timestamps in ISO-8601 UTC, other values in Arrow's
/// display form.
pub fn write_print_row(data: &RecordBatch, row: usize, kind: RowKind, out: &mut String) {
    out.push_str(kind.short());
    out.push('[');
    for c in 0..data.num_columns() {
        if c > 0 {
            out.push_str(", ");
        }
        let col = data.column(c);
        if let DataType::Timestamp(_, _) = col.data_type() {
            let mut s = String::new();
            write_value(col.as_ref(), row, &mut s);
            out.push_str(s.trim_matches('"'));
        } else {
            out.push_str(&arrow::util::display::array_value_to_string(col, row).unwrap_or_default());
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use keel_runtime::changelog::{changelog_batch, with_op_field};
    use std::sync::Arc;

    fn data() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), Some("a"), Some("a"), Some("b\"")])) as ArrayRef,
                Arc::new(Int64Array::from(vec![Some(1), Some(1), Some(2), None])),
                Arc::new(TimestampMillisecondArray::from(vec![0, 0, 1000, 2000])),
            ],
        )
        .unwrap()
    }

    fn changelog() -> RecordBatch {
        let d = data();
        let kinds = [RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter, RowKind::Delete];
        changelog_batch(with_op_field(d.schema().as_ref()), d.columns().to_vec(), &kinds).unwrap()
    }

    #[test]
    fn changes_split_off_op_and_default_to_inserts() {
        let c = Changes::of(&changelog()).unwrap();
        assert!(c.is_changelog());
        assert_eq!(c.data.num_columns(), 3);
        assert_eq!(c.num_rows(), 4);
        let kinds: Vec<_> = (0..4).map(|r| c.kind(r).unwrap()).collect();
        assert_eq!(kinds, vec![RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter, RowKind::Delete]);
        let a = Changes::of(&data()).unwrap();
        assert!(!a.is_changelog());
        assert_eq!(a.data.num_columns(), 3);
        assert!((0..4).all(|r| a.kind(r).unwrap() == RowKind::Insert));
    }

    #[test]
    fn debezium_envelopes_match_flink() {
        let c = Changes::of(&changelog()).unwrap();
        let lines: Vec<String> = (0..4)
            .map(|r| {
                let mut s = String::new();
                encode_debezium(&c.data, r, c.kind(r).unwrap(), &mut s);
                s
            })
            .collect();
        let row0 = r#"{"user":"a","n":1,"ts":"1970-01-01T00:00:00.000Z"}"#;
        assert_eq!(lines[0], format!(r#"{{"before":null,"after":{row0},"op":"c"}}"#));
        assert_eq!(lines[1], format!(r#"{{"before":{row0},"after":null,"op":"d"}}"#));
        assert_eq!(lines[2], r#"{"before":null,"after":{"user":"a","n":2,"ts":"1970-01-01T00:00:01.000Z"},"op":"c"}"#);
        assert_eq!(
            lines[3],
            r#"{"before":{"user":"b\"","n":null,"ts":"1970-01-01T00:00:02.000Z"},"after":null,"op":"d"}"#
        );
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v.get("_op").is_none() && v["after"].get("_op").is_none() && v["before"].get("_op").is_none());
        }
    }

    #[test]
    fn upsert_records_key_value_tombstone_and_skip() {
        let c = Changes::of(&changelog()).unwrap();
        let key = c.data.project(&[0]).unwrap();
        let recs: Vec<_> = (0..4).map(|r| upsert_record(&c.data, &key, r, c.kind(r).unwrap())).collect();
        assert_eq!(
            recs[0],
            UpsertRecord::Put {
                key: r#"{"user":"a"}"#.into(),
                value: r#"{"user":"a","n":1,"ts":"1970-01-01T00:00:00.000Z"}"#.into()
            }
        );
        assert_eq!(recs[1], UpsertRecord::Skip);
        assert!(
            matches!(&recs[2], UpsertRecord::Put { key, value } if key == r#"{"user":"a"}"# && value.contains(r#""n":2"#))
        );
        assert_eq!(recs[3], UpsertRecord::Tombstone { key: r#"{"user":"b\""}"#.into() });
    }

    #[test]
    fn upsert_batches_drop_a_minus_u_that_a_plus_u_overwrites_and_delete_on_a_lone_one() {
        let d = data();
        // a: -U then +U (an update); a: -U alone later (a filter dropped its +U); b: -U then +I.
        let kinds = [RowKind::UpdateBefore, RowKind::UpdateAfter, RowKind::UpdateBefore, RowKind::Insert];
        let users = Arc::new(StringArray::from(vec!["a", "a", "a", "b"])) as ArrayRef;
        let b = changelog_batch(
            with_op_field(d.schema().as_ref()),
            vec![users, d.column(1).clone(), d.column(2).clone()],
            &kinds,
        )
        .unwrap();
        let c = Changes::of(&b).unwrap();
        let key = c.data.project(&[0]).unwrap();
        let recs = upsert_batch(&c, &key).unwrap();
        assert_eq!(
            recs,
            vec![
                (
                    r#"{"user":"a"}"#.to_string(),
                    Some(r#"{"user":"a","n":1,"ts":"1970-01-01T00:00:00.000Z"}"#.to_string())
                ),
                (r#"{"user":"a"}"#.to_string(), None),
                (
                    r#"{"user":"b"}"#.to_string(),
                    Some(r#"{"user":"b","n":null,"ts":"1970-01-01T00:00:02.000Z"}"#.to_string())
                ),
            ]
        );
        let b2 = changelog_batch(with_op_field(d.schema().as_ref()), d.columns().to_vec(), &[RowKind::UpdateBefore; 4])
            .unwrap();
        let c2 = Changes::of(&b2).unwrap();
        let recs = upsert_batch(&c2, &c2.data.project(&[0]).unwrap()).unwrap();
        assert_eq!(recs.len(), 2, "one tombstone per key: {recs:?}");
        assert!(recs.iter().all(|r| r.1.is_none()));
    }

    #[test]
    fn print_rows_carry_their_kind() {
        let c = Changes::of(&changelog()).unwrap();
        let lines: Vec<String> = (0..4)
            .map(|r| {
                let mut s = String::new();
                write_print_row(&c.data, r, c.kind(r).unwrap(), &mut s);
                s
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                "+I[a, 1, 1970-01-01T00:00:00.000Z]",
                "-U[a, 1, 1970-01-01T00:00:00.000Z]",
                "+U[a, 2, 1970-01-01T00:00:01.000Z]",
                "-D[b\", , 1970-01-01T00:00:02.000Z]",
            ]
        );
    }

    #[test]
    fn append_only_formats_refuse_changelogs_naming_the_sink() {
        assert!(ensure_append_only(&data(), "topic sink 't'").is_ok());
        let err = ensure_append_only(&changelog(), "topic sink 't'").unwrap_err();
        assert!(matches!(err, RuntimeError::Internal(_)), "{err:?}");
        assert!(err.to_string().contains("topic sink 't'"), "{err}");
    }
}
