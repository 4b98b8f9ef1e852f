//! Flink scalar functions that DataFusion does not have under Flink's name or semantics:
//! `MOD(a, b)`, `SPLIT_INDEX(s, delimiter, index)`, `REGEXP_EXTRACT(s, pattern, group)`,
//! `LPAD`/`RPAD(s, length, pad)`, and `count_char(s, c)` (the Nexmark suite's user function);
//! the time functions (`DATE_FORMAT`, `HOUR`, `TIMESTAMPADD`, ...) are in `scalar_time`.
//!
//! Semantics (FLINK_SEMANTICS.md): `SPLIT_INDEX` and `REGEXP_EXTRACT` return NULL when the index
//! or group is out of range, and NULL for NULL input; an invalid pattern is an error naming it.
//! `LPAD`/`RPAD` return NULL for a negative length or an empty pad (DataFusion's give a string),
//! and cut a longer string to the length, counting characters.
//!
//! Invariant: no call builds a value longer than `limits::MAX_BUILT_STRING` nor more than
//! `limits::MAX_STRING_BATCH_BYTES` for one batch; past either it fails naming the function, the
//! length and the limit, before allocating. DataFusion's `REPEAT` is registered wrapped in the
//! same check (`BoundedRepeat`); its own bound is 2 GB per batch.

use crate::limits::{MAX_BUILT_STRING, MAX_STRING_BATCH_BYTES};
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringBuilder};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::functions::string::repeat::RepeatFunc;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use std::sync::Arc;

/// The functions to register in a session.
pub fn flink_scalars() -> Vec<ScalarUDF> {
    type Body = fn(&[ColumnarValue]) -> Result<ColumnarValue>;
    let (int, text) = (DataType::Int64, DataType::Utf8);
    let table: Vec<(&str, Vec<DataType>, DataType, Body)> = vec![
        ("MOD", vec![int.clone(), int.clone()], int.clone(), modulo),
        ("SPLIT_INDEX", vec![text.clone(), text.clone(), int.clone()], text.clone(), split_index),
        ("REGEXP_EXTRACT", vec![text.clone(), text.clone(), int.clone()], text.clone(), regexp_extract),
        ("LPAD", vec![text.clone(), int.clone(), text.clone()], text.clone(), lpad),
        ("RPAD", vec![text.clone(), int.clone(), text.clone()], text.clone(), rpad),
        // The Nexmark suite's user function (q14), built in so that `keel run` can run q14.
        ("COUNT_CHAR", vec![text.clone(), text.clone()], int.clone(), count_char),
    ];
    let mut out = vec![];
    for name in ["repeat", "REPEAT"] {
        out.push(ScalarUDF::new_from_impl(BoundedRepeat { name, inner: RepeatFunc::new() }));
    }
    // Identifiers are case-sensitive: register the upper- and lower-case spellings.
    for (name, inputs, output, body) in table {
        for n in [name.to_string(), name.to_lowercase()] {
            out.push(create_udf(&n, inputs.clone(), output.clone(), Volatility::Immutable, Arc::new(body)));
        }
    }
    out.extend(crate::scalar_time::time_scalars());
    out
}

/// `LPAD(s, length, pad)`: `s` cut or left-padded with `pad` to `length` characters.
fn lpad(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    pad(args, true)
}

/// `RPAD(s, length, pad)`: `s` cut or right-padded with `pad` to `length` characters.
fn rpad(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    pad(args, false)
}

fn pad(args: &[ColumnarValue], left: bool) -> Result<ColumnarValue> {
    let name = if left { "LPAD" } else { "RPAD" };
    let (a, n, scalar) = arrays(args)?;
    let (s, len, p) = (a[0].as_string::<i32>(), a[1].as_primitive::<Int64Type>(), a[2].as_string::<i32>());
    let mut out = StringBuilder::with_capacity(n, n * 8);
    let mut buf = String::new();
    let mut built = 0usize;
    for i in 0..n {
        let (is, il, ip) = (at(s, i), at(len, i), at(p, i));
        if s.is_null(is) || len.is_null(il) || p.is_null(ip) || len.value(il) < 0 || p.value(ip).is_empty() {
            out.append_null();
            continue;
        }
        let (base, want, fill) = (s.value(is), len.value(il), p.value(ip));
        if want > MAX_BUILT_STRING as i64 {
            return exec_err!(
                "{name}: the length {want} is over the limit of {MAX_BUILT_STRING} characters (1 MiB) per value; \
                 build shorter strings"
            );
        }
        let want = want as usize;
        let have = base.chars().count();
        built += padded_bytes(base, have, want, fill);
        if built > MAX_STRING_BATCH_BYTES {
            return exec_err!(
                "{name}: one batch of {n} rows would build more than {MAX_STRING_BATCH_BYTES} bytes (256 MiB) of \
                 strings, the limit of one call (each value is within {MAX_BUILT_STRING} characters); build shorter strings"
            );
        }
        buf.clear();
        if have >= want {
            buf.extend(base.chars().take(want));
        } else {
            if !left {
                buf.push_str(base);
            }
            buf.extend(fill.chars().cycle().take(want - have));
            if left {
                buf.push_str(base);
            }
        }
        out.append_value(&buf);
    }
    done(Arc::new(out.finish()), scalar)
}

/// The bytes of `base` (`have` characters) cut or padded with `fill` to `want` characters.
fn padded_bytes(base: &str, have: usize, want: usize, fill: &str) -> usize {
    if have >= want {
        return base.char_indices().nth(want).map_or(base.len(), |(at, _)| at);
    }
    let (k, per) = (want - have, fill.chars().count().max(1));
    base.len() + k / per * fill.len() + fill.char_indices().nth(k % per).map_or(fill.len(), |(at, _)| at)
}

/// DataFusion's `REPEAT(s, n)`, refusing (before building anything) a value longer than
/// `MAX_BUILT_STRING` bytes or more than `MAX_STRING_BATCH_BYTES` for one batch.
#[derive(Debug, PartialEq, Eq, Hash)]
struct BoundedRepeat {
    name: &'static str,
    inner: RepeatFunc,
}

impl ScalarUDFImpl for BoundedRepeat {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        check_repeat(&args.args)?;
        self.inner.invoke_with_args(args)
    }
}

/// Fails when `REPEAT(s, n)` over these arguments would build too much (see `BoundedRepeat`).
fn check_repeat(args: &[ColumnarValue]) -> Result<()> {
    let (a, n, _) = arrays(args)?;
    let (Some(text), Some(count)) = (a.first(), a.get(1)) else { return exec_err!("REPEAT takes two arguments") };
    let bytes = arrow::compute::kernels::length::length(text)?;
    let bytes = arrow::compute::cast(&bytes, &DataType::Int64)?;
    let (bytes, count) = (bytes.as_primitive::<Int64Type>(), arrow::compute::cast(count, &DataType::Int64)?);
    let count = count.as_primitive::<Int64Type>();
    let mut built = 0u128;
    for i in 0..n {
        let (ib, ic) = (at(bytes, i), at(count, i));
        if bytes.is_null(ib) || count.is_null(ic) {
            continue;
        }
        let copies = count.value(ic).max(0);
        let size = i128::from(bytes.value(ib)) * i128::from(copies);
        if size > MAX_BUILT_STRING as i128 || (copies > MAX_BUILT_STRING as i64) {
            return exec_err!(
                "REPEAT: {copies} copies of a {}-byte string would be {size} bytes, over the limit of \
                 {MAX_BUILT_STRING} bytes (1 MiB) per value; build shorter strings",
                bytes.value(ib)
            );
        }
        built += size as u128;
        if built > MAX_STRING_BATCH_BYTES as u128 {
            return exec_err!(
                "REPEAT: one batch of {n} rows would build more than {MAX_STRING_BATCH_BYTES} bytes (256 MiB) of \
                 strings, the limit of one call; build shorter strings"
            );
        }
    }
    Ok(())
}

/// `count_char(s, c)`: how many times the character `c` occurs in `s`.
fn count_char(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, n, scalar) = arrays(args)?;
    let (s, c) = (a[0].as_string::<i32>(), a[1].as_string::<i32>());
    let out: Int64Array = (0..n)
        .map(|i| {
            let (is, ic) = (at(s, i), at(c, i));
            let ch = c.is_valid(ic).then(|| c.value(ic).chars().next()).flatten()?;
            s.is_valid(is).then(|| s.value(is).chars().filter(|x| *x == ch).count() as i64)
        })
        .collect();
    done(Arc::new(out), scalar)
}

/// The arguments as arrays, with the number of rows and whether all were scalars. A scalar
/// argument becomes a one-element array (not one copy per row): read it through `at`.
fn arrays(args: &[ColumnarValue]) -> Result<(Vec<ArrayRef>, usize, bool)> {
    let n = args.iter().find_map(|a| match a {
        ColumnarValue::Array(a) => Some(a.len()),
        ColumnarValue::Scalar(_) => None,
    });
    let all_scalar = n.is_none();
    let n = n.unwrap_or(1);
    let arrays = args
        .iter()
        .map(|a| match a {
            ColumnarValue::Array(a) => Ok(a.clone()),
            ColumnarValue::Scalar(v) => v.to_array_of_size(1),
        })
        .collect::<Result<_>>()?;
    Ok((arrays, n, all_scalar))
}

/// The index of row `i` in an argument from `arrays`: 0 for a scalar's one-element array.
fn at(a: &dyn Array, i: usize) -> usize {
    if a.len() == 1 { 0 } else { i }
}

fn done(a: ArrayRef, all_scalar: bool) -> Result<ColumnarValue> {
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&a, 0)?))
    } else {
        Ok(ColumnarValue::Array(a))
    }
}

/// `MOD(a, b)`: the remainder with the sign of `a` (Java's `%`); NULL when `b` is 0 or NULL.
fn modulo(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, n, scalar) = arrays(args)?;
    let (x, y) = (a[0].as_primitive::<Int64Type>(), a[1].as_primitive::<Int64Type>());
    let out: Int64Array = (0..n)
        .map(|i| {
            let (ix, iy) = (at(x, i), at(y, i));
            (x.is_valid(ix) && y.is_valid(iy) && y.value(iy) != 0).then(|| x.value(ix).wrapping_rem(y.value(iy)))
        })
        .collect();
    done(Arc::new(out), scalar)
}

/// `SPLIT_INDEX(s, delimiter, index)`: the `index`-th (0-based) piece of `s`.
fn split_index(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, n, scalar) = arrays(args)?;
    let (s, d, k) = (a[0].as_string::<i32>(), a[1].as_string::<i32>(), a[2].as_primitive::<Int64Type>());
    let mut out = StringBuilder::with_capacity(n, n * 8);
    for i in 0..n {
        let (is, id, ik) = (at(s, i), at(d, i), at(k, i));
        if s.is_null(is) || d.is_null(id) || k.is_null(ik) || k.value(ik) < 0 || d.value(id).is_empty() {
            out.append_null();
            continue;
        }
        let (text, delimiter) = (s.value(is), d.value(id));
        let piece = match delimiter.as_bytes() {
            &[b] if b.is_ascii() => nth_piece(text, b, k.value(ik) as usize),
            _ => text.split(delimiter).nth(k.value(ik) as usize),
        };
        out.append_option(piece);
    }
    done(Arc::new(out.finish()), scalar)
}

/// The `k`-th piece of `text` split at the ASCII byte `delimiter`. The delimiters are found eight
/// bytes at a time (`delimiters_in`), then byte by byte in the last few; on URLs this beats both
/// a plain byte loop and a `memchr` call per piece, whose set-up costs more than the short gaps
/// between slashes.
fn nth_piece(text: &str, delimiter: u8, k: usize) -> Option<&str> {
    let bytes = text.as_bytes();
    let (mut piece, mut start) = (0, 0);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let mut found = delimiters_in(word, delimiter);
        while found != 0 {
            let i = at + (found.trailing_zeros() / 8) as usize;
            if piece == k {
                return text.get(start..i);
            }
            piece += 1;
            start = i + 1;
            found &= found - 1;
        }
        at += 8;
    }
    for (j, &b) in words.remainder().iter().enumerate() {
        if b == delimiter {
            let i = at + j;
            if piece == k {
                return text.get(start..i);
            }
            piece += 1;
            start = i + 1;
        }
    }
    // An ASCII delimiter never splits a UTF-8 character, so `get` always succeeds.
    (piece == k).then(|| text.get(start..)).flatten()
}

/// The high bit of each byte of `word` (8 bytes, little-endian order) that equals `b`, and no
/// other bit: the exact form of the zero-byte test, with no false match next to a true one.
fn delimiters_in(word: &[u8], b: u8) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(word);
    let x = u64::from_le_bytes(w) ^ u64::from_le_bytes([b; 8]);
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// `REGEXP_EXTRACT(s, pattern, group)`: the `group`-th capture of the first match.
fn regexp_extract(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, n, scalar) = arrays(args)?;
    let (s, p, g) = (a[0].as_string::<i32>(), a[1].as_string::<i32>(), a[2].as_primitive::<Int64Type>());
    let mut out = StringBuilder::with_capacity(n, n * 8);
    crate::regex_extract::with_extractors(|extractors| {
        // The pattern is almost always a constant: its extractor is looked up again only when the
        // row's pattern is another row of the pattern column.
        let mut current: Option<(usize, usize)> = None;
        for i in 0..n {
            let (is, ip, ig) = (at(s, i), at(p, i), at(g, i));
            if s.is_null(is) || p.is_null(ip) || g.is_null(ig) || g.value(ig) < 0 {
                out.append_null();
                continue;
            }
            let k = match current {
                Some((row, k)) if row == ip => k,
                _ => {
                    let pattern = p.value(ip);
                    match extractors.index_of(pattern) {
                        Ok(k) => {
                            current = Some((ip, k));
                            k
                        }
                        Err(e) => return exec_err!("REGEXP_EXTRACT: invalid pattern '{pattern}': {e}"),
                    }
                }
            };
            let group = usize::try_from(g.value(ig)).unwrap_or(usize::MAX);
            out.append_option(extractors.get(k).extract(s.value(is), group));
        }
        Ok(())
    })?;
    done(Arc::new(out.finish()), scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(f: fn(&[ColumnarValue]) -> Result<ColumnarValue>, args: Vec<ScalarValue>) -> ScalarValue {
        let args: Vec<ColumnarValue> = args.into_iter().map(ColumnarValue::Scalar).collect();
        match f(&args).unwrap() {
            ColumnarValue::Scalar(v) => v,
            ColumnarValue::Array(_) => panic!("scalar in, scalar out"),
        }
    }

    #[test]
    fn flink_semantics() {
        assert_eq!(
            call(modulo, vec![ScalarValue::Int64(Some(-7)), ScalarValue::Int64(Some(3))]),
            ScalarValue::Int64(Some(-1))
        );
        assert_eq!(
            call(modulo, vec![ScalarValue::Int64(Some(7)), ScalarValue::Int64(Some(0))]),
            ScalarValue::Int64(None)
        );
        let s = |v: &str| ScalarValue::Utf8(Some(v.to_string()));
        assert_eq!(call(split_index, vec![s("a/b/c"), s("/"), ScalarValue::Int64(Some(1))]), s("b"));
        assert_eq!(call(split_index, vec![s("a/b/c"), s("/"), ScalarValue::Int64(Some(3))]), ScalarValue::Utf8(None));
        let url = s("https://x.com/a/item.htm?query=1&channel_id=42");
        assert_eq!(
            call(regexp_extract, vec![url.clone(), s("(&|^)channel_id=([^&]*)"), ScalarValue::Int64(Some(2))]),
            s("42")
        );
        assert_eq!(
            call(regexp_extract, vec![url, s("(&|^)channel_id=([^&]*)"), ScalarValue::Int64(Some(5))]),
            ScalarValue::Utf8(None)
        );
    }

    #[test]
    fn columns_with_constant_arguments_are_read_row_by_row() {
        use arrow::array::StringArray;
        let urls = StringArray::from(vec![
            Some("https://x.com/a/b/c/item.htm?query=1&channel_id=7"),
            None,
            Some("https://x.com/item.htm?query=1"),
            Some("channel_id=9&x=1"),
        ]);
        let args = |k: i64, p: &str| {
            vec![
                ColumnarValue::Array(Arc::new(urls.clone())),
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(p.to_string()))),
                ColumnarValue::Scalar(ScalarValue::Int64(Some(k))),
            ]
        };
        let strings = |v: ColumnarValue| match v {
            ColumnarValue::Array(a) => a.as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>(),
            ColumnarValue::Scalar(_) => panic!("a column in, a column out"),
        };
        let got = strings(regexp_extract(&args(2, "(&|^)channel_id=([^&]*)")).unwrap());
        assert_eq!(got, vec![Some("7".into()), None, None, Some("9".into())]);
        let got = strings(split_index(&args(3, "/")).unwrap());
        assert_eq!(got, vec![Some("a".into()), None, Some("item.htm?query=1".into()), None]);
        let got = strings(split_index(&args(1, "://")).unwrap());
        assert_eq!(
            got,
            vec![
                Some("x.com/a/b/c/item.htm?query=1&channel_id=7".into()),
                None,
                Some("x.com/item.htm?query=1".into()),
                None
            ]
        );
        assert!(regexp_extract(&args(1, "(")).is_err(), "an invalid pattern is an error");
    }

    #[test]
    fn byte_split_matches_str_split() {
        let texts = ["", "/", "a", "a/", "/a", "a//b", "https://x.com/ab/é/c", "ü/ü//", "01234567/", "0123456/8"];
        for t in texts {
            for k in 0..6 {
                assert_eq!(nth_piece(t, b'/', k), t.split('/').nth(k), "{t:?} piece {k}");
            }
        }
        // Seeded random texts across several 8-byte words, of bytes next to the delimiter's value
        // (and multi-byte characters) that an inexact word test would take for it.
        let mut rng = keel_types::test_rng::Lcg::seeded("byte_split_matches_str_split");
        let seed = rng.seed();
        let alphabet = ["/", ".", "0", "\u{1}", "\u{7f}", "a", "é", "€", "//"];
        for _ in 0..2000 {
            let mut t = String::new();
            for _ in 0..rng.below(32) * 2 {
                t.push_str(alphabet[rng.below(alphabet.len() as u64) as usize]);
            }
            for d in [b'/', b'.', 1u8] {
                for k in 0..12 {
                    let want = t.split(d as char).nth(k);
                    assert_eq!(nth_piece(&t, d, k), want, "{t:?} split at {d} piece {k} (seed {seed})");
                }
            }
        }
    }

    #[test]
    fn strings_longer_than_the_limit_fail_naming_the_function_the_length_and_the_limit() {
        // A length of i64::MAX aborted the process on a failed allocation: run where that cannot
        // kill the test binary.
        if keel_types::test_child::run_in_child(
            "scalar::tests::strings_longer_than_the_limit_fail_naming_the_function_the_length_and_the_limit",
        ) {
            return;
        }
        let limit = crate::limits::MAX_BUILT_STRING;
        let s = |v: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.to_string())));
        let n = |v: i64| ColumnarValue::Scalar(ScalarValue::Int64(Some(v)));
        for want in [limit as i64 + 1, 1 << 31, i64::MAX] {
            for (f, name) in [(lpad as fn(&[ColumnarValue]) -> Result<ColumnarValue>, "LPAD"), (rpad, "RPAD")] {
                let err = f(&[s("hi"), n(want), s("x")]).err().map(|e| e.to_string());
                let err = err.unwrap_or_else(|| panic!("{name} to {want} characters succeeded"));
                assert!(err.contains(name) && err.contains(&want.to_string()), "{err}");
                assert!(err.contains(&format!("limit of {limit}")), "{err}");
            }
            let err = check_repeat(&[s("ab"), n(want)]).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("REPEAT") && err.contains(&format!("limit of {limit}")), "{err}");
        }
        // At the limit, a value is built.
        let ColumnarValue::Scalar(ScalarValue::Utf8(Some(v))) = lpad(&[s("hi"), n(limit as i64), s("é")]).unwrap()
        else {
            panic!("a string")
        };
        assert_eq!(v.chars().count(), limit);
        // Many values each within the limit, too many bytes together for one batch.
        let rows = crate::limits::MAX_STRING_BATCH_BYTES / limit + 1;
        let lengths = ColumnarValue::Array(Arc::new(Int64Array::from(vec![limit as i64; rows])));
        let err = rpad(&[s("x"), lengths, s("y")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("RPAD") && err.contains("one batch"), "{err}");
    }

    #[test]
    fn lpad_and_rpad_follow_flink() {
        let s = |v: &str| ScalarValue::Utf8(Some(v.to_string()));
        let n = |v: i64| ScalarValue::Int64(Some(v));
        let null = ScalarValue::Utf8(None);
        assert_eq!(call(lpad, vec![s("hi"), n(4), s("??")]), s("??hi"));
        assert_eq!(call(lpad, vec![s("hi"), n(5), s("xy")]), s("xyxhi"));
        assert_eq!(call(rpad, vec![s("hi"), n(5), s("xy")]), s("hixyx"));
        assert_eq!(call(lpad, vec![s("hello"), n(2), s("x")]), s("he"));
        assert_eq!(call(rpad, vec![s("hello"), n(2), s("x")]), s("he"));
        assert_eq!(call(lpad, vec![s("héé"), n(4), s("ü")]), s("ühéé"), "characters, not bytes");
        assert_eq!(call(rpad, vec![s("hi"), n(0), s("x")]), s(""));
        assert_eq!(call(lpad, vec![s("hi"), n(-1), s("x")]), null, "a negative length is NULL");
        assert_eq!(call(rpad, vec![s("hi"), n(4), s("")]), null, "an empty pad is NULL");
        assert_eq!(call(lpad, vec![null.clone(), n(4), s("x")]), null);
        assert_eq!(call(rpad, vec![s("hi"), ScalarValue::Int64(None), s("x")]), null);
    }
}
