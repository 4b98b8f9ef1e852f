//! The window table-valued functions inside a query (`TABLE(TUMBLE|HOP|CUMULATE|SESSION(TABLE t,
//! DESCRIPTOR(ts), ...))`), each replaced by a generated table name that DataFusion can plan.
//!
//! Invariants: every error carries the line and column of the token it is about; identical calls
//! (same table, time column, window and partitioning) share one generated table, so a query that
//! repeats a windowed subquery plans it as one input.

use crate::error::{Pos, Result, SqlError};
use crate::script::{Cursor, Tok, is_ws, parse_interval};
use datafusion::sql::sqlparser::tokenizer::Token;
use keel_types::WindowSpec;

/// A window table-valued function found in a query.
#[derive(Debug, Clone)]
pub struct WindowCall {
    /// The generated table name standing in for the call.
    pub alias: String,
    pub table: String,
    pub time_column: String,
    pub spec: WindowSpec,
    pub pos: Pos,
    /// SESSION's `PARTITION BY` columns: sessions are per value of these.
    pub partition_by: Vec<String>,
}

/// Replaces every `TABLE(TUMBLE|HOP|CUMULATE(TABLE t, DESCRIPTOR(c), ...))` in a query by a
/// generated table name; returns the rewritten tokens and the calls.
pub fn rewrite_window_calls(toks: &[Tok]) -> Result<(Vec<Tok>, Vec<WindowCall>)> {
    let mut out = Vec::with_capacity(toks.len());
    let mut calls = vec![];
    let mut i = 0;
    while i < toks.len() {
        let mut c = Cursor::new(&toks[i..]);
        let starts_call = c.is_keyword("TABLE")
            && matches!(c.peek_nth(1).map(|t| &t.token), Some(Token::LParen))
            && matches!(c.peek_nth(2).map(|t| &t.token), Some(Token::Word(_)))
            && matches!(c.peek_nth(3).map(|t| &t.token), Some(Token::LParen));
        if is_ws(&toks[i].token) || !starts_call {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        let pos = c.expect_keyword("TABLE")?;
        c.expect(&Token::LParen)?;
        let (func, fpos) = c.ident()?;
        let func = func.to_ascii_uppercase();
        c.expect(&Token::LParen)?;
        if !matches!(func.as_str(), "TUMBLE" | "HOP" | "CUMULATE" | "SESSION") {
            return Err(SqlError::unsupported(
                fpos,
                format!("table function {func}"),
                Some("use TUMBLE, HOP, CUMULATE or SESSION"),
            ));
        }
        if matches!(c.peek_nth(1).map(|t| &t.token), Some(Token::RArrow)) {
            return Err(SqlError::unsupported(
                c.pos(),
                "named arguments in window functions",
                Some("pass them by position"),
            ));
        }
        c.expect_keyword("TABLE")?;
        let (table, _) = c.ident()?;
        let mut partition_by = vec![];
        if c.eat_keyword("PARTITION") {
            c.expect_keyword("BY")?;
            partition_by.push(c.ident()?.0);
            // More columns until the comma before DESCRIPTOR.
            while matches!(c.peek().map(|t| &t.token), Some(Token::Comma))
                && !matches!(c.peek_nth(1).map(|t| &t.token), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("DESCRIPTOR"))
            {
                c.advance();
                partition_by.push(c.ident()?.0);
            }
        }
        c.expect(&Token::Comma)?;
        c.expect_keyword("DESCRIPTOR")?;
        c.expect(&Token::LParen)?;
        let (time_column, _) = c.ident()?;
        c.expect(&Token::RParen)?;
        let mut intervals = vec![];
        while c.eat(&Token::Comma) {
            intervals.push((c.pos(), parse_interval(&mut c)?));
        }
        c.expect(&Token::RParen)?;
        c.expect(&Token::RParen)?;
        let arity = |n: usize, m: usize, usage: &str| -> Result<()> {
            if intervals.len() < n || intervals.len() > m {
                Err(SqlError::syntax(fpos, format!("{func} takes {usage}")))
            } else {
                Ok(())
            }
        };
        let iv = |k: usize| intervals.get(k).map(|x| x.1).unwrap_or(0);
        let spec = match func.as_str() {
            "TUMBLE" => {
                arity(1, 2, "(TABLE t, DESCRIPTOR(ts), size [, offset])")?;
                WindowSpec::Tumble { size: iv(0), offset: iv(1) }
            }
            "HOP" => {
                arity(2, 3, "(TABLE t, DESCRIPTOR(ts), slide, size [, offset])")?;
                WindowSpec::Hop { slide: iv(0), size: iv(1), offset: iv(2) }
            }
            "SESSION" => {
                arity(1, 1, "(TABLE t PARTITION BY key, DESCRIPTOR(ts), gap)")?;
                WindowSpec::Session { gap: iv(0) }
            }
            _ => {
                arity(2, 3, "(TABLE t, DESCRIPTOR(ts), step, max size [, offset])")?;
                WindowSpec::Cumulate { step: iv(0), max: iv(1), offset: iv(2) }
            }
        };
        spec.validate().map_err(|m| SqlError::invalid(fpos, m))?;
        // An identical call (same table, time column, window and partitioning) reuses the
        // earlier call's table, so that the planner sees one input and can share its plan.
        let same = |w: &&WindowCall| {
            w.table == table && w.time_column == time_column && w.spec == spec && w.partition_by == partition_by
        };
        let earlier = calls.iter().find(same).map(|w| w.alias.clone());
        let alias = earlier.clone().unwrap_or_else(|| format!("__keel_window_{}", calls.len()));
        out.push(Tok {
            token: Token::Word(datafusion::sql::sqlparser::tokenizer::Word {
                value: alias.clone(),
                quote_style: None,
                keyword: datafusion::sql::sqlparser::keywords::Keyword::NoKeyword,
            }),
            pos,
        });
        if earlier.is_none() {
            calls.push(WindowCall { alias, table, time_column, spec, pos, partition_by });
        }
        i += c.i;
    }
    Ok((out, calls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{render, tokenize};

    #[test]
    fn rewrites_window_calls() {
        let sql = "SELECT * FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) WHERE x > 1";
        let (toks, calls) = rewrite_window_calls(&tokenize(sql).unwrap()).unwrap();
        assert_eq!(render(&toks), "SELECT * FROM __keel_window_0 WHERE x > 1");
        assert_eq!(calls[0].spec, WindowSpec::Hop { slide: 2000, size: 10_000, offset: 0 });
        assert_eq!(calls[0].table, "events");
        // The same call twice is one generated table; a different window is another.
        let hop = "TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))";
        let tumble = "TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND))";
        let sql = format!("SELECT * FROM {hop} a JOIN {hop} b ON a.x = b.x JOIN {tumble} c ON a.x = c.x");
        let (toks, calls) = rewrite_window_calls(&tokenize(&sql).unwrap()).unwrap();
        let want =
            "SELECT * FROM __keel_window_0 a JOIN __keel_window_0 b ON a.x = b.x JOIN __keel_window_1 c ON a.x = c.x";
        assert_eq!(render(&toks), want);
        assert_eq!(calls.len(), 2);
        let s = "SELECT * FROM TABLE(SESSION(TABLE e PARTITION BY k, DESCRIPTOR(ts), INTERVAL '5' SECOND))";
        let (_, calls) = rewrite_window_calls(&tokenize(s).unwrap()).unwrap();
        assert_eq!(
            (calls[0].spec, calls[0].partition_by.clone()),
            (WindowSpec::Session { gap: 5000 }, vec!["k".to_string()])
        );
    }
}
