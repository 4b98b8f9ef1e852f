//! Dead letters: the JSON record a source writes to its dead-letter topic for a bad record, with
//! the table, where the record was read, why it is bad, and the record's text.
//!
//! Invariant: a letter stays small whatever the record, because dead-letter topics have a
//! per-record size limit (1 MiB by default): it holds at most `MAX_RECORD_BYTES` of the record's
//! text (then saying it was cut and how long the record was) and at most `MAX_REASON_BYTES` of
//! the reason (a decoder's message may quote the value). Escaped as JSON, every byte at most six,
//! a letter is under 420 KiB plus its file name.

use serde_json::{Map, Value};

/// The most bytes of a bad record's text a dead letter keeps: 64 KiB.
pub const MAX_RECORD_BYTES: usize = 64 << 10;

/// The most bytes of the reason a dead letter (or an error naming a bad record) keeps: 4 KiB.
pub const MAX_REASON_BYTES: usize = 4 << 10;

/// `text` (lossy UTF-8) cut to at most `max` bytes at a character boundary.
fn cut(text: &[u8], max: usize) -> String {
    let mut s = String::from_utf8_lossy(&text[..text.len().min(max)]).into_owned();
    // A character split by the cut became U+FFFD, which may be longer than what it replaced.
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// The reason a record is bad, cut to `MAX_REASON_BYTES`.
pub fn bounded_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_string();
    }
    format!("{}... (cut at {MAX_REASON_BYTES} bytes)", cut(reason.as_bytes(), MAX_REASON_BYTES))
}

/// A dead letter: `place` (the table and where the record was read, as JSON fields), `error`
/// and `record`, the bad record's text of which `text` is the start (all of it, or at least
/// `MAX_RECORD_BYTES`) and `bytes` the full length. A cut record says so with
/// `"record_truncated": true` and `"record_bytes"`.
pub fn letter(place: Map<String, Value>, reason: &str, text: &[u8], bytes: u64) -> Vec<u8> {
    let mut letter = place;
    letter.insert("error".into(), Value::String(bounded_reason(reason)));
    letter.insert("record".into(), Value::String(cut(text, MAX_RECORD_BYTES)));
    if bytes > text.len().min(MAX_RECORD_BYTES) as u64 {
        letter.insert("record_truncated".into(), Value::Bool(true));
        letter.insert("record_bytes".into(), Value::from(bytes));
    }
    Value::Object(letter).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_keep_a_prefix_cut_at_a_character_boundary() {
        let place = || serde_json::json!({"table": "t"}).as_object().cloned().unwrap_or_default();
        let short: Value = serde_json::from_slice(&letter(place(), "bad", b"{x", 2)).unwrap();
        assert_eq!(short, serde_json::json!({"table": "t", "error": "bad", "record": "{x"}));
        // Two-byte characters, cut in the middle of one: the prefix ends before it.
        let long = "é".repeat(MAX_RECORD_BYTES);
        let cut_letter: Value =
            serde_json::from_slice(&letter(place(), &"r".repeat(3 * MAX_REASON_BYTES), long.as_bytes(), 1 << 40))
                .unwrap();
        let record = cut_letter["record"].as_str().unwrap_or_default();
        assert!(record.len() <= MAX_RECORD_BYTES && record.len() > MAX_RECORD_BYTES - 2, "{}", record.len());
        assert!(record.chars().all(|c| c == 'é'));
        assert_eq!(cut_letter["record_truncated"], Value::Bool(true));
        assert_eq!(cut_letter["record_bytes"].as_u64(), Some(1 << 40));
        let error = cut_letter["error"].as_str().unwrap_or_default();
        assert!(error.len() < MAX_REASON_BYTES + 64 && error.ends_with("(cut at 4096 bytes)"), "{}", error.len());
    }
}
