//! JSON files that carry their own checksum, so that a flipped byte that still parses (a digit
//! of a partition count, a retention limit, a producer's sequence, a run id) is found rather than
//! obeyed: the object written holds a `"checksum"` field, `crc32c:XXXXXXXX` over the object's
//! compact serialization without that field (keys sorted, as serde_json's maps are).
//!
//! Invariants: what `to_vec` writes, `from_slice` accepts and returns as it was given; a file
//! whose checksum does not match its content is refused with the reason; a file without a
//! checksum (written by Keel 0.1) is read as it is, so older data keeps opening.

use serde::Serialize;
use serde::de::DeserializeOwned;

const FIELD: &str = "checksum";

fn digest(value: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(value).expect("invariant: a JSON value serializes");
    format!("crc32c:{:08x}", crc32c_of(&bytes))
}

/// CRC32C (Castagnoli), as the rest of Keel's formats use.
fn crc32c_of(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// `value` (a struct or map) as pretty JSON with its checksum.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut v = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(map) = &mut v else {
        return Err("only a JSON object can carry a checksum".into());
    };
    map.remove(FIELD);
    let sum = digest(&v);
    if let serde_json::Value::Object(map) = &mut v {
        map.insert(FIELD.to_string(), serde_json::Value::String(sum));
    }
    serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())
}

/// Parses what `to_vec` wrote (or a file without a checksum); `Err` says what is wrong.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let serde_json::Value::Object(map) = &mut v
        && let Some(stored) = map.remove(FIELD)
    {
        let computed = digest(&v);
        if stored.as_str() != Some(computed.as_str()) {
            return Err(format!("its checksum does not match its content (stored {stored}, computed {computed})"));
        }
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_changed_value_that_still_parses_is_refused_and_old_files_open() {
        let value: BTreeMap<String, u64> = [("partitions".into(), 4), ("retention".into(), 1_000_000)].into();
        let bytes = to_vec(&value).unwrap();
        assert_eq!(from_slice::<BTreeMap<String, u64>>(&bytes).unwrap(), value);
        let text = String::from_utf8(bytes).unwrap();
        let changed = text.replace("1000000", "1000");
        assert!(
            from_slice::<BTreeMap<String, u64>>(changed.as_bytes()).unwrap_err().contains("checksum does not match")
        );
        // Every single flipped bit is found (or breaks the JSON).
        for i in 0..text.len() {
            for bit in 0..8 {
                let mut b = text.clone().into_bytes();
                b[i] ^= 1 << bit;
                if let Ok(v) = from_slice::<BTreeMap<String, u64>>(&b) {
                    assert_eq!(v, value, "flip of bit {bit} of byte {i} was accepted as another value");
                }
            }
        }
        assert_eq!(from_slice::<BTreeMap<String, u64>>(br#"{"partitions": 4}"#).unwrap().len(), 1);
        assert_eq!(crc32c_of(b"123456789"), 0xe306_9283, "the CRC32C check value");
    }
}
