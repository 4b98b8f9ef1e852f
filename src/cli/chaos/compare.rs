//! The comparison of `keel bench chaos`: a pipeline's committed output against the result
//! computed independently from the same seeded events, record for record.
//!
//! Rows are JSON objects. Each pipeline names its key fields (what identifies a result row: a
//! user and window, an order and payment) and its value fields; a row is compared by the JSON
//! text of those fields, so `7` and `"7"` differ and nothing is rounded. Invariants:
//! - every expected row is counted once as found, **lost** (no committed row has its key) or
//!   **wrong** (committed, but no committed row with its key has its values);
//! - every committed row beyond the first with one key is counted as **duplicated**, whatever
//!   its values; a committed row whose key is not expected, or that lacks a field, is **wrong**;
//! - a changelog (debezium-json envelopes) is first replayed into its final table, counting
//!   each row's insertions minus retractions; a retraction of a row that is not there (a change
//!   applied twice, or the change that inserted it lost) is **wrong**, and so is a record that is
//!   not an envelope. A lost or duplicated change then also shows as a lost, doubled or wrong
//!   final row.
//!
//! Nothing here depends on Keel's code: the comparison must hold whatever Keel does.

use serde_json::Value;
use std::collections::BTreeMap;

/// How many differences a verdict keeps to print.
const MAX_DIFFS: usize = 10;

/// The outcome of comparing one pipeline's output.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Rows of the expected result, each checked against the committed output.
    pub compared: u64,
    /// Expected rows with no committed row of their key.
    pub lost: u64,
    /// Committed rows beyond the first of their key.
    pub duplicated: u64,
    /// Expected rows committed only with other values, committed rows that were not expected,
    /// and (changelogs) retractions of rows that were not there.
    pub wrong: u64,
    /// The first differences, described.
    pub diffs: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.wrong == 0
    }

    fn note(&mut self, what: String) {
        if self.diffs.len() < MAX_DIFFS {
            self.diffs.push(what);
        }
    }
}

/// The JSON text of `fields` of `row`, as an array; `None` if one is missing.
fn project(row: &Value, fields: &[&str]) -> Option<String> {
    let values: Option<Vec<Value>> = fields.iter().map(|f| row.get(*f).cloned()).collect();
    values.map(|v| Value::Array(v).to_string())
}

/// Compares committed `actual` rows with `expected` rows, by `key` and `value` fields.
/// Fails only if the expectation itself has two rows with one key (a bug of the benchmark).
pub fn compare(expected: &[Value], actual: &[Value], key: &[&str], value: &[&str]) -> Result<Verdict, String> {
    let mut v = Verdict { compared: expected.len() as u64, ..Verdict::default() };
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for row in expected {
        let (Some(k), Some(val)) = (project(row, key), project(row, value)) else {
            return Err(format!("expected row {row} lacks a key or value field"));
        };
        if want.insert(k.clone(), val).is_some() {
            return Err(format!("the expectation has two rows with key {k}"));
        }
    }
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in actual {
        match (project(row, key), project(row, value)) {
            (Some(k), Some(val)) => got.entry(k).or_default().push(val),
            _ => {
                v.wrong += 1;
                v.note(format!("committed row without the fields {key:?} {value:?}: {row}"));
            }
        }
    }
    for (k, val) in &want {
        match got.get(k) {
            None => {
                v.lost += 1;
                v.note(format!("lost: key {k}, expected {val}"));
            }
            Some(vals) => {
                if vals.len() > 1 {
                    v.duplicated += vals.len() as u64 - 1;
                    v.note(format!("duplicated: key {k} committed {} times: {}", vals.len(), vals.join(", ")));
                }
                if !vals.contains(val) {
                    v.wrong += 1;
                    v.note(format!("wrong: key {k}, expected {val}, committed {}", vals.join(", ")));
                }
            }
        }
    }
    for (k, vals) in &got {
        if !want.contains_key(k) {
            v.wrong += vals.len() as u64;
            v.note(format!("unexpected: key {k} committed as {}", vals.join(", ")));
        }
    }
    Ok(v)
}

/// Replays debezium-json change records into the rows of the final table (a row inserted twice
/// and never retracted is there twice). Returns the rows, how many retractions found no row and
/// records were not envelopes, and descriptions of the first of those. Records are taken one at
/// a time and a row is forgotten when its count returns to zero, so memory follows the final
/// table, not the changelog's length.
pub fn replay(records: impl IntoIterator<Item = Value>) -> (Vec<Value>, u64, Vec<String>) {
    let mut table: BTreeMap<String, (Value, i64)> = BTreeMap::new();
    let mut bad = 0u64;
    let mut notes = vec![];
    let note = |what: String, notes: &mut Vec<String>| {
        if notes.len() < MAX_DIFFS {
            notes.push(what);
        }
    };
    for r in records {
        let r = &r;
        let side = |name: &str| r.get(name).filter(|v| v.is_object());
        let (before, after) = (side("before"), side("after"));
        if r.get("op").is_none() || (before.is_none() && after.is_none()) {
            bad += 1;
            note(format!("a change record that is not a debezium-json envelope: {r}"), &mut notes);
            continue;
        }
        for (row, change) in [(before, -1), (after, 1)] {
            let Some(row) = row else { continue };
            let text = row.to_string();
            let n = {
                let e = table.entry(text.clone()).or_insert((row.clone(), 0));
                e.1 += change;
                e.1
            };
            if n == 0 {
                table.remove(&text);
            }
        }
    }
    let mut rows = vec![];
    for (text, (row, n)) in table {
        if n < 0 {
            bad += n.unsigned_abs();
            note(format!("retracted {} more time(s) than inserted: {text}", n.unsigned_abs()), &mut notes);
        }
        rows.extend(std::iter::repeat_n(row, n.max(0) as usize));
    }
    (rows, bad, notes)
}

/// Replays a changelog (see `replay`) and compares its final table; retractions of rows that
/// were not there and records that are not envelopes count as wrong.
pub fn compare_changelog(
    expected: &[Value],
    records: impl IntoIterator<Item = Value>,
    key: &[&str],
    value: &[&str],
) -> Result<Verdict, String> {
    let (rows, bad, notes) = replay(records);
    let mut v = compare(expected, &rows, key, value)?;
    v.wrong += bad;
    for n in notes {
        v.note(n);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[&str] = &["user", "w"];
    const VALUE: &[&str] = &["n", "total"];

    fn rows() -> Vec<Value> {
        (0..20).map(|i| json!({"user": format!("u{}", i % 5), "w": i / 5, "n": i, "total": i * 10})).collect()
    }

    #[test]
    fn equal_output_passes() {
        let mut actual = rows();
        actual.reverse();
        let v = compare(&rows(), &actual, KEY, VALUE).unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.compared, 20);
    }

    #[test]
    fn a_removed_row_is_lost_a_doubled_row_duplicated_a_changed_row_wrong() {
        let expected = rows();
        let mut actual = expected.clone();
        actual.remove(3);
        actual.push(expected[7].clone());
        actual[11]["total"] = json!(111);
        let v = compare(&expected, &actual, KEY, VALUE).unwrap();
        assert_eq!((v.compared, v.lost, v.duplicated, v.wrong), (20, 1, 1, 1), "{v:?}");
        assert!(v.diffs.iter().any(|d| d.starts_with("lost") && d.contains(r#"["u3",0]"#)), "{:?}", v.diffs);
        assert!(!v.ok());
    }

    #[test]
    fn a_row_of_another_type_or_key_or_without_a_field_is_wrong() {
        let expected = rows();
        let mut actual = expected.clone();
        actual[0]["n"] = json!("0");
        actual.push(json!({"user": "nobody", "w": 0, "n": 1, "total": 1}));
        actual.push(json!({"user": "u1", "w": 0}));
        let v = compare(&expected, &actual, KEY, VALUE).unwrap();
        assert_eq!((v.lost, v.duplicated, v.wrong), (0, 0, 3), "{v:?}");
    }

    #[test]
    fn an_expectation_with_two_rows_for_one_key_is_refused() {
        let mut expected = rows();
        expected.push(expected[0].clone());
        assert!(compare(&expected, &[], KEY, VALUE).is_err());
    }

    fn insert(row: &Value) -> Value {
        json!({"before": null, "after": row, "op": "c"})
    }
    fn delete(row: &Value) -> Value {
        json!({"before": row, "after": null, "op": "d"})
    }

    /// A per-key running count as a group aggregate writes it: +I, then -U/+U pairs.
    fn changelog(keys: u64, updates: u64) -> (Vec<Value>, Vec<Value>) {
        let row = |k: u64, n: u64| json!({"user": format!("u{k}"), "w": 0, "n": n, "total": n * 10});
        let mut log = vec![];
        for n in 1..=updates {
            for k in 0..keys {
                if n > 1 {
                    log.push(delete(&row(k, n - 1)));
                }
                log.push(insert(&row(k, n)));
            }
        }
        (log, (0..keys).map(|k| row(k, updates)).collect())
    }

    #[test]
    fn a_complete_changelog_replays_to_the_expected_table() {
        let (log, expected) = changelog(4, 5);
        let v = compare_changelog(&expected, log.clone(), KEY, VALUE).unwrap();
        assert!(v.ok(), "{v:?}");
    }

    #[test]
    fn a_duplicated_or_lost_change_is_caught() {
        let (log, expected) = changelog(4, 5);
        // The pair that moves u1 from n = 2 to n = 3, applied twice.
        let at = log.iter().position(|r| r["before"]["user"] == "u1" && r["before"]["n"] == 2).unwrap();
        let mut doubled = log.clone();
        doubled.splice(at..at, log[at..at + 2].to_vec());
        let v = compare_changelog(&expected, doubled, KEY, VALUE).unwrap();
        assert!(v.duplicated >= 1 && v.wrong >= 1, "{v:?}");
        // The same pair lost.
        let mut lost = log.clone();
        lost.drain(at..at + 2);
        let v = compare_changelog(&expected, lost, KEY, VALUE).unwrap();
        assert!(v.duplicated >= 1 && v.wrong >= 1, "{v:?}");
        // A lost first insert: the key's later retraction finds nothing.
        let first = log.iter().position(|r| r["after"]["user"] == "u2").unwrap();
        let mut no_insert = log.clone();
        no_insert.remove(first);
        let v = compare_changelog(&expected, no_insert, KEY, VALUE).unwrap();
        assert_eq!(v.wrong, 1, "{v:?}");
        assert!(v.diffs.iter().any(|d| d.starts_with("retracted 1 more")), "{:?}", v.diffs);
        // A lost last change: the key keeps its previous row.
        let last = log.iter().rposition(|r| r["after"]["user"] == "u3").unwrap();
        let mut stale = log.clone();
        stale.drain(last - 1..=last);
        let v = compare_changelog(&expected, stale, KEY, VALUE).unwrap();
        assert_eq!((v.lost, v.duplicated, v.wrong), (0, 0, 1), "{v:?}");
        // A whole key lost.
        let only_others: Vec<Value> = log.iter().filter(|r| !r.to_string().contains("\"u0\"")).cloned().collect();
        let v = compare_changelog(&expected, only_others, KEY, VALUE).unwrap();
        assert_eq!((v.lost, v.duplicated, v.wrong), (1, 0, 0), "{v:?}");
    }

    #[test]
    fn a_record_that_is_not_an_envelope_is_wrong() {
        let (mut log, expected) = changelog(2, 2);
        log.push(json!({"user": "u0"}));
        let v = compare_changelog(&expected, log.clone(), KEY, VALUE).unwrap();
        assert_eq!(v.wrong, 1, "{v:?}");
    }
}
