//! Flink's time syntax that DataFusion's planner refuses, rewritten on a query's tokens before
//! planning: `FLOOR(t TO unit)` becomes `date_trunc('unit', t)` (WEEK, which starts on Sunday in
//! Flink, becomes `keel_floor_time('WEEK', t)`), `CEIL(t TO unit)` (or `CEILING`) becomes
//! `keel_ceil_time('UNIT', t)`, and the unit keyword of `TIMESTAMPADD(unit, n, t)` and
//! `TIMESTAMPDIFF(unit, a, b)` becomes a string literal.
//!
//! Invariants: tokens outside a rewritten call are copied unchanged with their positions, and
//! new tokens take the position of the call they replace (errors still point into the text);
//! a `FLOOR`/`CEIL` without `TO` (the numeric functions) is left alone; an unknown unit is
//! refused here, with its position.

use super::{CEIL_FN, FLOOR_FN, UNIT_NAMES, Unit};
use crate::error::{Result, SqlError};
use crate::script::Tok;
use datafusion::sql::sqlparser::tokenizer::{Token, Whitespace, Word};

fn is_ws(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

/// The index of the first token at or after `i` that is not whitespace.
fn next_sig(toks: &[Tok], mut i: usize) -> Option<usize> {
    while i < toks.len() && is_ws(&toks[i].token) {
        i += 1;
    }
    (i < toks.len()).then_some(i)
}

/// An unquoted word's text in upper case.
fn word_upper(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn word(value: &str) -> Token {
    Token::Word(Word {
        value: value.to_string(),
        quote_style: None,
        keyword: datafusion::sql::sqlparser::keywords::Keyword::NoKeyword,
    })
}

/// Rewrites every `FLOOR`/`CEIL(t TO unit)` and the unit of every `TIMESTAMPADD`/`TIMESTAMPDIFF`.
pub(crate) fn rewrite_time_syntax(toks: &[Tok]) -> Result<Vec<Tok>> {
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let tok = &toks[i];
        let open = next_sig(toks, i + 1).filter(|&o| toks[o].token == Token::LParen);
        let name = word_upper(&tok.token);
        let (Some(name), Some(open)) = (name, open) else {
            out.push(tok.clone());
            i += 1;
            continue;
        };
        match name.as_str() {
            "FLOOR" | "CEIL" | "CEILING" => {
                if let Some((call, next)) = floor_ceil(toks, i, open, name == "FLOOR")? {
                    out.extend(call);
                    i = next;
                    continue;
                }
            }
            "TIMESTAMPADD" | "TIMESTAMPDIFF" => {
                let unit_at = next_sig(toks, open + 1);
                let comma = unit_at.and_then(|u| next_sig(toks, u + 1)).filter(|&c| toks[c].token == Token::Comma);
                if let (Some(u), Some(_)) = (unit_at, comma)
                    && let Some(text) = word_upper(&toks[u].token)
                {
                    if Unit::parse(&text).is_none() {
                        return Err(SqlError::invalid(
                            toks[u].pos,
                            format!("{name}: {text} is not a time unit (use {UNIT_NAMES})"),
                        ));
                    }
                    out.extend(toks[i..u].iter().cloned());
                    out.push(Tok { token: Token::SingleQuotedString(text), pos: toks[u].pos });
                    i = u + 1;
                    continue;
                }
            }
            _ => {}
        }
        out.push(tok.clone());
        i += 1;
    }
    Ok(out)
}

/// `FLOOR|CEIL ( t TO unit )` starting at `at` (its `(` at `open`): the replacement tokens and
/// the index after the call; `None` when the call has no top-level `TO`.
fn floor_ceil(toks: &[Tok], at: usize, open: usize, is_floor: bool) -> Result<Option<(Vec<Tok>, usize)>> {
    let mut depth = 0usize;
    let mut to = None;
    let mut close = None;
    for (k, t) in toks.iter().enumerate().skip(open + 1) {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => {
                close = Some(k);
                break;
            }
            Token::RParen => depth -= 1,
            tok if depth == 0 && to.is_none() && word_upper(tok).as_deref() == Some("TO") => to = Some(k),
            _ => {}
        }
    }
    let (Some(to), Some(close)) = (to, close) else {
        // No TO (numeric FLOOR/CEIL), or unbalanced parentheses, which the parser reports.
        return Ok(None);
    };
    let func = if is_floor { "FLOOR" } else { "CEIL" };
    let unit_toks: Vec<&Tok> = toks[to + 1..close].iter().filter(|t| !is_ws(&t.token)).collect();
    let unit_text = match unit_toks.as_slice() {
        [t] => word_upper(&t.token),
        _ => None,
    };
    let Some(unit_text) = unit_text else {
        return Err(SqlError::syntax(toks[to].pos, format!("{func}(... TO unit) needs one unit: {UNIT_NAMES}")));
    };
    let Some(unit) = Unit::parse(&unit_text) else {
        return Err(SqlError::unsupported(
            unit_toks[0].pos,
            format!("{func}(... TO {unit_text})"),
            Some(&format!("use {UNIT_NAMES}")),
        ));
    };
    if toks[open + 1..to].iter().all(|t| is_ws(&t.token)) {
        return Err(SqlError::syntax(toks[to].pos, format!("{func}(... TO {unit_text}) needs a time before TO")));
    }
    let pos = toks[at].pos;
    let (target, unit_arg) = match (is_floor, unit) {
        (true, Unit::Week) | (false, _) => (if is_floor { FLOOR_FN } else { CEIL_FN }, unit_text.clone()),
        (true, _) => ("date_trunc", unit_text.to_ascii_lowercase()),
    };
    let mut call = vec![
        Tok { token: word(target), pos },
        Tok { token: Token::LParen, pos },
        Tok { token: Token::SingleQuotedString(unit_arg), pos },
        Tok { token: Token::Comma, pos },
        Tok { token: Token::Whitespace(Whitespace::Space), pos },
    ];
    // The time expression may itself hold FLOOR/CEIL calls.
    call.extend(rewrite_time_syntax(&toks[open + 1..to])?);
    call.push(Tok { token: Token::RParen, pos: toks[close].pos });
    Ok(Some((call, close + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{render, tokenize};

    fn rw(sql: &str) -> String {
        render(&rewrite_time_syntax(&tokenize(sql).unwrap()).unwrap())
    }

    fn err(sql: &str) -> String {
        rewrite_time_syntax(&tokenize(sql).unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn floor_and_ceil_to_a_unit() {
        assert_eq!(rw("SELECT FLOOR(ts TO HOUR) FROM t"), "SELECT date_trunc('hour', ts ) FROM t");
        assert_eq!(rw("select floor(ts to day) x"), "select date_trunc('day', ts ) x");
        assert_eq!(rw("SELECT FLOOR(ts TO WEEK)"), "SELECT keel_floor_time('WEEK', ts )");
        assert_eq!(
            rw("SELECT CEIL(ts TO MINUTE), CEILING(ts TO month)"),
            "SELECT keel_ceil_time('MINUTE', ts ), keel_ceil_time('MONTH', ts )"
        );
        assert_eq!(
            rw("SELECT CEIL(FLOOR(CAST(s AS TIMESTAMP(3)) TO DAY) + INTERVAL '1' HOUR TO HOUR)"),
            "SELECT keel_ceil_time('HOUR', date_trunc('day', CAST(s AS TIMESTAMP(3)) ) + INTERVAL '1' HOUR )"
        );
    }

    #[test]
    fn numeric_floor_and_other_text_stay() {
        for sql in [
            "SELECT FLOOR(price), CEIL(x / 2) FROM t",
            "SELECT floor FROM t WHERE 'FLOOR(ts TO HOUR)' = s",
            "SELECT FLOOR(GREATEST(a, b)) FROM t",
        ] {
            assert_eq!(rw(sql), sql);
        }
    }

    #[test]
    fn timestampadd_and_diff_units_become_strings() {
        assert_eq!(rw("SELECT TIMESTAMPADD(HOUR, 2, ts)"), "SELECT TIMESTAMPADD('HOUR', 2, ts)");
        assert_eq!(rw("SELECT timestampdiff( day , a, b)"), "SELECT timestampdiff( 'DAY' , a, b)");
        assert_eq!(rw("SELECT TIMESTAMPADD('HOUR', 2, ts)"), "SELECT TIMESTAMPADD('HOUR', 2, ts)");
    }

    #[test]
    fn quotes_inside_literals_survive_rendering() {
        let sql = "SELECT DATE_FORMAT(FLOOR(ts TO DAY), 'yyyy-MM-dd''T''HH') FROM t";
        assert_eq!(rw(sql), "SELECT DATE_FORMAT(date_trunc('day', ts ), 'yyyy-MM-dd''T''HH') FROM t");
    }

    #[test]
    fn unknown_units_are_refused_where_they_are() {
        let e = err("SELECT\n  FLOOR(ts TO DECADE)");
        assert!(e.starts_with("line 2, column 15: FLOOR(... TO DECADE) is not supported"), "{e}");
        let e = err("SELECT TIMESTAMPDIFF(MILLENNIUM, a, b)");
        assert!(e.starts_with("line 1, column 22: TIMESTAMPDIFF: MILLENNIUM is not a time unit"), "{e}");
        assert!(err("SELECT CEIL(ts TO)").contains("needs one unit"));
        assert!(err("SELECT CEIL(TO HOUR)").contains("needs a time before TO"));
    }
}
