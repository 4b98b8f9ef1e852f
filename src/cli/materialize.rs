//! `keel consume --materialize`: replays a changelog topic and prints the table it describes.
//!
//! Each record is recognised on its own: a debezium envelope (a JSON object with `op` and
//! `before`/`after`) adds its `after` row (`c`, `r`, `u`) and removes one row equal to its
//! `before` (`u`, `d`); otherwise a keyed record is an upsert (the key's latest value wins, an
//! empty value deletes the key). Anything else is an error naming the record's position; a
//! record nested deeper than 128 levels is refused by serde_json's limit (which never recurses
//! without bound).
//!
//! Invariants: debezium rows are kept as a multiset of canonical JSON texts (object keys sorted)
//! with signed counts, so the result does not depend on the order in which partitions are read
//! (a removal read before its insertion cancels it later); upsert keys are compared byte for
//! byte, and a key's records are applied in offset order (one key lives in one partition). The
//! printed table is the debezium rows with a positive count (each as many times) plus the live
//! upsert values, one canonical JSON object per line, sorted by the line text.

use anyhow::{Result, bail};
use serde_json::Value;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

/// Where a record was read: for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
}

impl std::fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic '{}' partition {} offset {}", self.topic, self.partition, self.offset)
    }
}

/// The table being rebuilt from a changelog.
#[derive(Default)]
pub struct Materialized {
    /// Debezium rows: canonical JSON text → signed count.
    rows: HashMap<String, i64>,
    /// Upsert records: key bytes → canonical JSON value.
    upserts: HashMap<Vec<u8>, String>,
    /// Records applied.
    pub applied: u64,
}

/// The canonical text of a JSON row: keys in order (serde_json's map is sorted), no spaces.
fn canonical(v: &Value) -> String {
    v.to_string()
}

impl Materialized {
    /// Applies one record read at `at`.
    pub fn apply(&mut self, key: Option<&[u8]>, value: &[u8], at: Position<'_>) -> Result<()> {
        let parsed: Option<Value> = if value.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice(value) {
                Ok(v) => Some(v),
                // serde_json stops at 128 levels instead of recursing on (and overflowing the stack).
                Err(e) if e.to_string().starts_with("recursion limit exceeded") => bail!(
                    "the record at {at} nests arrays and objects deeper than 128 levels, which no changelog row does"
                ),
                Err(_) => None,
            }
        };
        if let Some(Value::Object(env)) = &parsed
            && env.contains_key("op")
            && (env.contains_key("before") || env.contains_key("after"))
        {
            self.apply_envelope(env, at)?;
        } else if let Some(k) = key {
            if value.is_empty() {
                self.upserts.remove(k);
            } else {
                match parsed {
                    Some(v @ Value::Object(_)) => {
                        self.upserts.insert(k.to_vec(), canonical(&v));
                    }
                    _ => bail!("the record at {at} has a key but its value is not a JSON object (nor empty, a delete)"),
                }
            }
        } else {
            bail!(
                "the record at {at} is neither a debezium-json change (a JSON object with \"op\" and \"before\"/\"after\") \
                 nor a keyed upsert record; --materialize needs debezium-json or upsert records"
            );
        }
        self.applied += 1;
        Ok(())
    }

    fn apply_envelope(&mut self, env: &serde_json::Map<String, Value>, at: Position<'_>) -> Result<()> {
        let op = match env.get("op") {
            Some(Value::String(s)) => s.as_str(),
            _ => bail!("the debezium record at {at} has an \"op\" that is not a string"),
        };
        let row = |field: &str| -> Result<String> {
            match env.get(field) {
                Some(v @ Value::Object(_)) => Ok(canonical(v)),
                _ => bail!("the debezium record at {at} has op \"{op}\" but no \"{field}\" row object"),
            }
        };
        match op {
            "c" | "r" => self.add(row("after")?, 1),
            "d" => self.add(row("before")?, -1),
            "u" => {
                let (before, after) = (row("before")?, row("after")?);
                self.add(before, -1);
                self.add(after, 1);
            }
            other => bail!("the debezium record at {at} has op \"{other}\"; expected \"c\", \"r\", \"u\" or \"d\""),
        }
        Ok(())
    }

    fn add(&mut self, row: String, by: i64) {
        match self.rows.entry(row) {
            Entry::Occupied(mut e) => {
                *e.get_mut() += by;
                if *e.get() == 0 {
                    // A row inserted and deleted again is gone: the map holds only live rows.
                    e.remove();
                }
            }
            Entry::Vacant(e) => {
                e.insert(by);
            }
        }
    }

    /// Removals that found no equal row (a changelog that is not consistent).
    pub fn unmatched_removals(&self) -> i64 {
        self.rows.values().filter(|c| **c < 0).map(|c| -c).sum()
    }

    /// The current table: one canonical JSON object per line, sorted by the line text.
    pub fn lines(&self) -> Vec<String> {
        let mut counted: BTreeMap<&str, i64> = BTreeMap::new();
        for (row, n) in &self.rows {
            if *n > 0 {
                *counted.entry(row.as_str()).or_insert(0) += n;
            }
        }
        for v in self.upserts.values() {
            *counted.entry(v.as_str()).or_insert(0) += 1;
        }
        counted.into_iter().flat_map(|(row, n)| std::iter::repeat_n(row.to_string(), n as usize)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position<'static> {
        Position { topic: "t", partition: 0, offset }
    }

    #[test]
    fn debezium_changes_replay_in_any_order() {
        let recs = [
            r#"{"before":null,"after":{"k":"a","n":1},"op":"c"}"#,
            r#"{"before":{"k":"a","n":1},"after":null,"op":"d"}"#,
            r#"{"before":null,"after":{"n":2,"k":"a"},"op":"c"}"#,
            r#"{"before":{"k":"a","n":2},"after":{"k":"a","n":3},"op":"u"}"#,
            r#"{"before":null,"after":{"k":"b","n":1},"op":"r"}"#,
            r#"{"before":null,"after":{"k":"b","n":1},"op":"c"}"#,
        ];
        let want = vec![r#"{"k":"a","n":3}"#, r#"{"k":"b","n":1}"#, r#"{"k":"b","n":1}"#];
        let mut m = Materialized::default();
        for (i, r) in recs.iter().enumerate() {
            m.apply(None, r.as_bytes(), at(i as u64)).unwrap();
        }
        assert_eq!(m.lines(), want);
        assert_eq!(m.applied, 6);
        let mut rev = Materialized::default();
        for (i, r) in recs.iter().enumerate().rev() {
            rev.apply(None, r.as_bytes(), at(i as u64)).unwrap();
        }
        assert_eq!(rev.lines(), want);
        assert_eq!(rev.unmatched_removals(), 0);
    }

    #[test]
    fn upserts_keep_the_latest_value_and_tombstones_delete() {
        let mut m = Materialized::default();
        m.apply(Some(b"{\"k\":1}"), br#"{"k":1,"v":"x"}"#, at(0)).unwrap();
        m.apply(Some(b"{\"k\":2}"), br#"{"k":2,"v":"y"}"#, at(1)).unwrap();
        m.apply(Some(b"{\"k\":1}"), br#"{"v":"z","k":1}"#, at(2)).unwrap();
        m.apply(Some(b"{\"k\":2}"), b"", at(3)).unwrap();
        m.apply(Some(b"{\"k\":3}"), b"", at(4)).unwrap();
        assert_eq!(m.lines(), vec![r#"{"k":1,"v":"z"}"#]);
        assert_eq!(m.applied, 5);
    }

    #[test]
    fn records_of_neither_kind_are_refused_with_their_position() {
        let mut m = Materialized::default();
        let e = m.apply(None, br#"{"k":1}"#, Position { topic: "t", partition: 2, offset: 7 }).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("topic 't' partition 2 offset 7"), "{msg}");
        assert!(msg.contains("--materialize needs debezium-json or upsert records"), "{msg}");
        assert!(m.apply(None, b"", at(0)).is_err());
        assert!(m.apply(Some(b"k"), b"not json", at(0)).unwrap_err().to_string().contains("not a JSON object"));
        let e = m.apply(None, br#"{"before":null,"after":null,"op":"c"}"#, at(3)).unwrap_err();
        assert!(e.to_string().contains("no \"after\" row object"), "{e}");
        let e = m.apply(None, br#"{"before":null,"after":{"a":1},"op":"x"}"#, at(3)).unwrap_err();
        assert!(e.to_string().contains("has op \"x\""), "{e}");
        assert_eq!(m.applied, 0);
    }

    #[test]
    fn a_record_nested_too_deeply_is_refused_naming_the_limit() {
        let mut m = Materialized::default();
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        let e = m.apply(Some(b"k"), deep.as_bytes(), at(4)).unwrap_err().to_string();
        assert!(e.contains("offset 4") && e.contains("deeper than 128 levels"), "{e}");
        let row = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        let envelope = format!(r#"{{"before":null,"after":{row},"op":"c"}}"#);
        let e = m.apply(None, envelope.as_bytes(), at(5)).unwrap_err().to_string();
        assert!(e.contains("deeper than 128 levels"), "{e}");
        assert_eq!(m.applied, 0);
    }

    #[test]
    fn a_removal_without_its_row_is_counted() {
        let mut m = Materialized::default();
        m.apply(None, br#"{"before":{"a":1},"after":null,"op":"d"}"#, at(0)).unwrap();
        assert_eq!(m.unmatched_removals(), 1);
        assert!(m.lines().is_empty());
    }
}
