//! A guard before Arrow's decimal parser: a number written with an exponent of more than
//! `MAX_EXPONENT_DIGITS` digits (`7.7e70777778`), or with more than `MAX_NUMBER_DIGITS` digits,
//! makes arrow-cast's `parse_decimal` overflow its counters: a panic in a build with overflow
//! checks (found by the `json_records` fuzz target), a silently wrong value in a release build.
//! No DECIMAL can hold such a number, so a record or line holding one, read into a table with a
//! DECIMAL column, is a bad record before Arrow sees it.
//!
//! Invariant: only tables with a DECIMAL column pay for the scan, and only a token that is a
//! whole number (outside JSON strings, or the whole of a string or CSV field) is judged, so text
//! that merely contains such a pattern is not refused.

use arrow::datatypes::{DataType, Field, Schema};

/// The most digits (after leading zeros) an exponent may have: 9999 is far beyond any DECIMAL
/// (38 or 76 digits) and within arrow-cast's `i16`.
pub const MAX_EXPONENT_DIGITS: usize = 4;
/// The most digits a number may have before its exponent: arrow-cast counts them in a `u8`
/// (300 digits overflow it: a panic with overflow checks, a wrong value without), and no DECIMAL
/// has more than 76.
pub const MAX_NUMBER_DIGITS: usize = 100;

/// Whether a table's columns (nested fields included) hold a DECIMAL.
pub fn has_decimal(schema: &Schema) -> bool {
    fn field(f: &Field) -> bool {
        match f.data_type() {
            DataType::Decimal128(..) | DataType::Decimal256(..) => true,
            DataType::Struct(fields) => fields.iter().any(|f| field(f)),
            DataType::List(f) | DataType::LargeList(f) => field(f),
            _ => false,
        }
    }
    schema.fields().iter().any(|f| field(f))
}

/// Why `token` (the whole of it) is refused: a number-like token (digits, `.`, signs, an `e`)
/// whose exponent starts with too many digits. Arrow reads the exponent's digits before it looks
/// at what follows them, so `1E99999.5` overflows it as much as `1E99999` does.
fn huge_exponent(token: &[u8]) -> Option<String> {
    if !token.iter().all(|&b| matches!(b, b'0'..=b'9' | b'.' | b'+' | b'-' | b'e' | b'E')) {
        return None;
    }
    let e = token.iter().position(|&b| b == b'e' || b == b'E').unwrap_or(token.len());
    let mantissa = token[..e].iter().filter(|b| b.is_ascii_digit()).count();
    if mantissa == 0 && e == token.len() {
        return None;
    }
    // No digit before the exponent (`e66666666666`) still reaches Arrow's exponent parser: found
    // by the `file_lines` fuzz target.
    if mantissa > MAX_NUMBER_DIGITS {
        return Some(format!(
            "the number {}... has {mantissa} digits; a DECIMAL takes numbers of at most {MAX_NUMBER_DIGITS}",
            String::from_utf8_lossy(&token[..token.len().min(64)])
        ));
    }
    if e == token.len() {
        return None;
    }
    let exponent = &token[e + 1..];
    let exponent = exponent.strip_prefix(b"-").or_else(|| exponent.strip_prefix(b"+")).unwrap_or(exponent);
    let digits = exponent.iter().take_while(|b| b.is_ascii_digit()).skip_while(|&&b| b == b'0').count();
    (digits > MAX_EXPONENT_DIGITS).then(|| {
        format!(
            "the number {} has an exponent of {digits} digits or more; a DECIMAL takes exponents of at most \
             {MAX_EXPONENT_DIGITS}",
            String::from_utf8_lossy(&token[..token.len().min(64)])
        )
    })
}

/// Why a JSON record is refused for such a number (a number token, or a string that is one).
pub fn huge_exponent_json(record: &[u8]) -> Option<String> {
    let mut at = 0;
    while at < record.len() {
        match record[at] {
            b'"' => {
                let start = at + 1;
                let mut end = start;
                let mut escaped = false;
                while end < record.len() && (escaped || record[end] != b'"') {
                    escaped = !escaped && record[end] == b'\\';
                    end += 1;
                }
                if let Some(reason) = huge_exponent(&record[start..end]) {
                    return Some(reason);
                }
                at = end + 1;
            }
            b if b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.' => {
                let start = at;
                while at < record.len() && matches!(record[at], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    at += 1;
                }
                if let Some(reason) = huge_exponent(&record[start..at]) {
                    return Some(reason);
                }
            }
            _ => at += 1,
        }
    }
    None
}

/// Why a CSV line is refused for such a number in one of its fields (quotes around a field are
/// taken off; a delimiter inside quotes does not split).
pub fn huge_exponent_csv(line: &[u8], delimiter: u8) -> Option<String> {
    let mut start = 0;
    let mut quoted = false;
    for at in 0..=line.len() {
        if at < line.len() && line[at] == b'"' {
            quoted = !quoted;
        }
        if at == line.len() || (line[at] == delimiter && !quoted) {
            let field = &line[start..at];
            let field = field.strip_prefix(b"\"").and_then(|f| f.strip_suffix(b"\"")).unwrap_or(field);
            if let Some(reason) = huge_exponent(field) {
                return Some(reason);
            }
            start = at + 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_numbers_with_huge_exponents_are_refused() {
        assert!(huge_exponent_json(br#"{"dec":7.7e70777778,"ts":1}"#).is_some());
        assert!(huge_exponent_json(br#"{"dec":"-1E+123456"}"#).is_some());
        assert!(huge_exponent_json(br#"{"dec":1.5e00009999,"x":1e3}"#).is_none(), "leading zeros do not count");
        assert!(huge_exponent_json(br#"{"s":"see page 3e123456 here","n":12345678}"#).is_none());
        assert!(huge_exponent_json(br#"{"s":"quote \" 1e123456 \""}"#).is_none());
        assert!(huge_exponent_csv(b"a,\"1,2\",9e999999", b',').is_some());
        assert!(huge_exponent_csv(b"a,\"1e999999 apples\",3", b',').is_none());
        assert!(huge_exponent_csv(b"1e12;x", b';').is_none());
        // Arrow reads the exponent's digits before what follows them (found by fuzzing).
        assert!(huge_exponent_json(br#"{"dec":"99E999999999.99"}"#).is_some());
        assert!(huge_exponent_json(br#"{"dec":99E99999.9e1}"#).is_some());
        let long = format!(r#"{{"dec":"{}.5"}}"#, "9".repeat(300));
        assert!(huge_exponent_json(long.as_bytes()).unwrap().contains("301 digits"));
        assert!(huge_exponent_json(format!(r#"{{"dec":{}}}"#, "9".repeat(100)).as_bytes()).is_none());
        // An exponent with no digit before it still reaches Arrow's exponent parser (fuzzing).
        assert!(huge_exponent_csv(b",,e666666666666666665", b',').is_some());
        assert!(huge_exponent_csv(b"-.e123456,x", b',').is_some());
        assert!(huge_exponent_csv(b"e,-,.,E12", b',').is_none());
    }
}
