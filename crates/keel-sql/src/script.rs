//! Reading a pipeline file: tokens with positions, statements, `CREATE TABLE` definitions in
//! Flink's syntax (columns, `WATERMARK FOR`, `PRIMARY KEY ... NOT ENFORCED`, `PARTITIONED BY`, `WITH` options),
//! `INSERT INTO ... SELECT`, views; the window table-valued functions inside a query are
//! `window_calls.rs` (re-exported here).
//!
//! Invariant: every error carries the line and column of the token it is about.

use crate::error::{Pos, Result, SqlError};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

pub use crate::window_calls::{WindowCall, rewrite_window_calls};

/// A token and where it starts.
#[derive(Debug, Clone)]
pub struct Tok {
    pub token: Token,
    pub pos: Pos,
}

pub(crate) fn is_ws(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

/// Tokenizes the whole text.
pub fn tokenize(sql: &str) -> Result<Vec<Tok>> {
    let dialect = GenericDialect {};
    let toks: Vec<TokenWithSpan> = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::syntax(Pos { line: e.location.line, column: e.location.column }, e.message.clone()))?;
    Ok(toks
        .into_iter()
        .map(|t| Tok { pos: Pos { line: t.span.start.line, column: t.span.start.column }, token: t.token })
        .collect())
}

/// Splits tokens into statements at top-level semicolons, dropping empty ones.
pub fn split_statements(toks: Vec<Tok>) -> Vec<Vec<Tok>> {
    let mut out = vec![];
    let mut cur = vec![];
    for t in toks {
        if t.token == Token::SemiColon {
            if cur.iter().any(|t: &Tok| !is_ws(&t.token)) {
                out.push(std::mem::take(&mut cur));
            } else {
                cur.clear();
            }
        } else {
            cur.push(t);
        }
    }
    if cur.iter().any(|t| !is_ws(&t.token)) {
        out.push(cur);
    }
    out
}

/// Renders tokens back to SQL text. A string literal's quotes are doubled again (the tokenizer
/// unescaped them and the token's own rendering does not escape them).
pub fn render(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match &t.token {
            Token::SingleQuotedString(s) => format!("'{}'", s.replace('\'', "''")),
            other => other.to_string(),
        })
        .collect()
}

/// A cursor over a statement's tokens that skips whitespace and comments.
pub struct Cursor<'a> {
    toks: &'a [Tok],
    /// The next token's index (whitespace not skipped yet).
    pub(crate) i: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(toks: &'a [Tok]) -> Self {
        Cursor { toks, i: 0 }
    }

    fn skip_ws(&mut self) {
        while self.i < self.toks.len() && is_ws(&self.toks[self.i].token) {
            self.i += 1;
        }
    }

    pub fn index(&mut self) -> usize {
        self.skip_ws();
        self.i
    }

    pub fn peek(&mut self) -> Option<&'a Tok> {
        self.skip_ws();
        self.toks.get(self.i)
    }

    pub fn peek_nth(&mut self, n: usize) -> Option<&'a Tok> {
        self.skip_ws();
        self.toks[self.i..].iter().filter(|t| !is_ws(&t.token)).nth(n)
    }

    pub fn advance(&mut self) -> Option<&'a Tok> {
        let t = self.peek();
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    /// Position of the next token (or of the end).
    pub fn pos(&mut self) -> Pos {
        self.peek().map(|t| t.pos).or_else(|| self.toks.last().map(|t| t.pos)).unwrap_or_default()
    }

    pub fn is_keyword(&mut self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok { token: Token::Word(w), .. }) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
    }

    pub fn eat_keyword(&mut self, kw: &str) -> bool {
        let yes = self.is_keyword(kw);
        if yes {
            self.i += 1;
        }
        yes
    }

    pub fn expect_keyword(&mut self, kw: &str) -> Result<Pos> {
        let pos = self.pos();
        if self.eat_keyword(kw) {
            Ok(pos)
        } else {
            Err(SqlError::syntax(pos, format!("expected {kw}, found {}", self.describe_next())))
        }
    }

    pub fn eat(&mut self, t: &Token) -> bool {
        let yes = self.peek().is_some_and(|x| &x.token == t);
        if yes {
            self.i += 1;
        }
        yes
    }

    pub fn expect(&mut self, t: &Token) -> Result<Pos> {
        let pos = self.pos();
        if self.eat(t) {
            Ok(pos)
        } else {
            Err(SqlError::syntax(pos, format!("expected '{t}', found {}", self.describe_next())))
        }
    }

    pub fn describe_next(&mut self) -> String {
        match self.peek() {
            Some(t) => format!("'{}'", t.token),
            None => "the end of the statement".to_string(),
        }
    }

    /// An identifier, as written: identifiers are case-sensitive, as in Flink.
    pub fn ident(&mut self) -> Result<(String, Pos)> {
        let pos = self.pos();
        match self.advance().map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_some() => Ok((w.value.clone(), pos)),
            Some(Token::Word(w)) => Ok((w.value.clone(), pos)),
            Some(other) => Err(SqlError::syntax(pos, format!("expected a name, found '{other}'"))),
            None => Err(SqlError::syntax(pos, "expected a name, found the end of the statement")),
        }
    }

    pub fn string(&mut self) -> Result<(String, Pos)> {
        let pos = self.pos();
        match self.advance().map(|t| &t.token) {
            Some(Token::SingleQuotedString(s)) => Ok((s.clone(), pos)),
            Some(other) => Err(SqlError::syntax(pos, format!("expected a quoted string, found '{other}'"))),
            None => Err(SqlError::syntax(pos, "expected a quoted string, found the end of the statement")),
        }
    }

    pub fn number(&mut self) -> Result<(String, Pos)> {
        let pos = self.pos();
        match self.advance().map(|t| &t.token) {
            Some(Token::Number(n, _)) => Ok((n.clone(), pos)),
            Some(other) => Err(SqlError::syntax(pos, format!("expected a number, found '{other}'"))),
            None => Err(SqlError::syntax(pos, "expected a number, found the end of the statement")),
        }
    }

    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }
}

/// One column of a `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    /// For a computed column, `Null` until the planner resolves the expression's type.
    pub data_type: DataType,
    pub nullable: bool,
    pub pos: Pos,
    /// `name AS expression`: computed from the other columns when the table is read.
    pub computed: Option<String>,
}

/// `WATERMARK FOR column AS column - INTERVAL ...`.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    pub column: String,
    pub delay_ms: i64,
    pub pos: Pos,
}

/// A parsed `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub pos: Pos,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    pub primary_key: Option<Vec<String>>,
    /// `PARTITIONED BY (col, ...)`: the columns whose values name a row's directory (filesystem
    /// sinks); empty for an unpartitioned table. Each is a declared column, listed once.
    pub partition_by: Vec<String>,
    /// `WITH` options with their positions; keys as written (Flink's are case-sensitive).
    pub options: Vec<(String, String, Pos)>,
}

impl TableDef {
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.iter().find(|o| o.0 == key).map(|o| o.1.as_str())
    }
}

/// Parses a Flink SQL type name (after the column name).
fn parse_type(c: &mut Cursor<'_>) -> Result<DataType> {
    let (name, pos) = c.ident()?;
    if name.eq_ignore_ascii_case("ROW") {
        return parse_row(c);
    }
    let mut args = vec![];
    if c.eat(&Token::LParen) {
        loop {
            args.push(c.number()?.0.parse::<u32>().map_err(|_| SqlError::syntax(pos, "expected a whole number"))?);
            if !c.eat(&Token::Comma) {
                break;
            }
        }
        c.expect(&Token::RParen)?;
    }
    let t = match name.to_ascii_uppercase().as_str() {
        "VARCHAR" | "STRING" | "CHAR" | "TEXT" => DataType::Utf8,
        "BIGINT" => DataType::Int64,
        "INT" | "INTEGER" => DataType::Int32,
        "SMALLINT" => DataType::Int16,
        "TINYINT" => DataType::Int8,
        "DOUBLE" => {
            c.eat_keyword("PRECISION");
            DataType::Float64
        }
        "FLOAT" | "REAL" => DataType::Float32,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMP_LTZ" => {
            if args.first().is_some_and(|p| *p > 3) {
                return Err(SqlError::unsupported(
                    pos,
                    format!("{name}({}) (sub-millisecond precision)", args[0]),
                    Some("use TIMESTAMP(3)"),
                ));
            }
            if c.eat_keyword("WITH") || c.eat_keyword("WITHOUT") {
                c.eat_keyword("LOCAL");
                c.expect_keyword("TIME")?;
                c.expect_keyword("ZONE")?;
            }
            DataType::Timestamp(TimeUnit::Millisecond, None)
        }
        "DECIMAL" | "NUMERIC" | "DEC" => {
            let p = args.first().copied().unwrap_or(10);
            let s = args.get(1).copied().unwrap_or(0);
            if p == 0 || p > 38 || s > p {
                return Err(SqlError::invalid(
                    pos,
                    format!("DECIMAL({p}, {s}) is out of range: precision 1 to 38, scale at most the precision"),
                ));
            }
            DataType::Decimal128(p as u8, s as i8)
        }
        other => {
            return Err(SqlError::unsupported(
                pos,
                format!("column type {other}"),
                Some(
                    "use VARCHAR, BIGINT, INT, SMALLINT, TINYINT, DOUBLE, FLOAT, BOOLEAN, DECIMAL(p, s), DATE or TIMESTAMP(3)",
                ),
            ));
        }
    };
    Ok(t)
}

/// Parses the fields of `ROW<name TYPE, ...>` or `ROW(name TYPE, ...)` into a struct type.
fn parse_row(c: &mut Cursor<'_>) -> Result<DataType> {
    let close = if c.eat(&Token::Lt) {
        Token::Gt
    } else {
        c.expect(&Token::LParen)?;
        Token::RParen
    };
    let mut fields = vec![];
    loop {
        let (name, _) = c.ident()?;
        let t = parse_type(c)?;
        if matches!(c.peek().map(|t| &t.token), Some(Token::ShiftRight)) {
            return Err(SqlError::unsupported(c.pos(), "a ROW nested in a ROW", None));
        }
        fields.push(arrow::datatypes::Field::new(name, t, true));
        if !c.eat(&Token::Comma) {
            break;
        }
    }
    c.expect(&close)?;
    Ok(DataType::Struct(fields.into()))
}

/// Parses `INTERVAL 'n' UNIT` into milliseconds.
pub fn parse_interval(c: &mut Cursor<'_>) -> Result<i64> {
    let pos = c.expect_keyword("INTERVAL")?;
    let (n, npos) = c.string()?;
    let (unit, upos) = c.ident()?;
    let per = match unit.to_ascii_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1.0,
        "SECOND" => 1_000.0,
        "MINUTE" => 60_000.0,
        "HOUR" => 3_600_000.0,
        "DAY" => 86_400_000.0,
        other => {
            return Err(SqlError::unsupported(
                upos,
                format!("interval unit {other}"),
                Some("use MILLISECOND, SECOND, MINUTE, HOUR or DAY"),
            ));
        }
    };
    let v: f64 = n.trim().parse().map_err(|_| SqlError::syntax(npos, format!("'{n}' is not a number of {unit}")))?;
    let ms = v * per;
    if ms.fract() != 0.0 || !ms.is_finite() {
        return Err(SqlError::invalid(pos, format!("INTERVAL '{n}' {unit} is not a whole number of milliseconds")));
    }
    Ok(ms as i64)
}

/// Parses a `CREATE [TEMPORARY] TABLE` statement.
pub fn parse_create_table(toks: &[Tok]) -> Result<TableDef> {
    let mut c = Cursor::new(toks);
    c.expect_keyword("CREATE")?;
    c.eat_keyword("TEMPORARY");
    c.expect_keyword("TABLE")?;
    if c.eat_keyword("IF") {
        c.expect_keyword("NOT")?;
        c.expect_keyword("EXISTS")?;
    }
    let (name, pos) = c.ident()?;
    c.expect(&Token::LParen)?;
    let mut def = TableDef {
        name,
        pos,
        columns: vec![],
        watermark: None,
        primary_key: None,
        partition_by: vec![],
        options: vec![],
    };
    loop {
        if c.is_keyword("WATERMARK") {
            let wpos = c.expect_keyword("WATERMARK")?;
            c.expect_keyword("FOR")?;
            let (column, cpos) = c.ident()?;
            c.expect_keyword("AS")?;
            let (col2, c2pos) = c.ident()?;
            if col2 != column {
                return Err(SqlError::unsupported(
                    c2pos,
                    "a watermark expression on another column",
                    Some("write WATERMARK FOR ts AS ts - INTERVAL '1' SECOND"),
                ));
            }
            let delay_ms = if c.eat(&Token::Minus) { parse_interval(&mut c)? } else { 0 };
            if !matches!(c.peek().map(|t| &t.token), Some(Token::Comma | Token::RParen)) {
                return Err(SqlError::unsupported(
                    c.pos(),
                    "this watermark expression",
                    Some("Keel accepts `WATERMARK FOR ts AS ts` or `ts - INTERVAL 'n' UNIT`"),
                ));
            }
            if !def.columns.iter().any(|col| col.name == column) {
                return Err(SqlError::invalid(
                    cpos,
                    format!("WATERMARK FOR {column}: no column named {column} is declared before it"),
                ));
            }
            def.watermark = Some(WatermarkDef { column, delay_ms, pos: wpos });
        } else if c.is_keyword("PRIMARY") {
            c.expect_keyword("PRIMARY")?;
            c.expect_keyword("KEY")?;
            c.expect(&Token::LParen)?;
            let mut cols = vec![c.ident()?.0];
            while c.eat(&Token::Comma) {
                cols.push(c.ident()?.0);
            }
            c.expect(&Token::RParen)?;
            c.expect_keyword("NOT")?;
            c.expect_keyword("ENFORCED")?;
            def.primary_key = Some(cols);
        } else {
            let (col, cpos) = c.ident()?;
            if def.columns.iter().any(|x| x.name == col) {
                return Err(SqlError::invalid(cpos, format!("column {col} is declared twice")));
            }
            if c.eat_keyword("AS") {
                // A computed column: the expression runs to the next top-level comma or ')'.
                let start = c.index();
                let mut depth = 0i32;
                while let Some(t) = c.peek() {
                    match t.token {
                        Token::LParen => depth += 1,
                        Token::RParen if depth == 0 => break,
                        Token::RParen => depth -= 1,
                        Token::Comma if depth == 0 => break,
                        _ => {}
                    }
                    c.advance();
                }
                let end = c.index();
                let expr = render(&toks[start..end]);
                if expr.trim().is_empty() {
                    return Err(SqlError::syntax(cpos, format!("computed column {col} has no expression after AS")));
                }
                def.columns.push(ColumnDef {
                    name: col,
                    data_type: DataType::Null,
                    nullable: true,
                    pos: cpos,
                    computed: Some(expr),
                });
                if c.eat(&Token::Comma) {
                    continue;
                }
                c.expect(&Token::RParen)?;
                break;
            }
            let data_type = parse_type(&mut c)?;
            let mut nullable = true;
            if c.eat_keyword("NOT") {
                c.expect_keyword("NULL")?;
                nullable = false;
            } else {
                c.eat_keyword("NULL");
            }
            if c.is_keyword("METADATA") {
                return Err(SqlError::unsupported(c.pos(), "METADATA columns", None));
            }
            def.columns.push(ColumnDef { name: col, data_type, nullable, pos: cpos, computed: None });
        }
        if c.eat(&Token::Comma) {
            continue;
        }
        c.expect(&Token::RParen)?;
        break;
    }
    if c.is_keyword("COMMENT") {
        c.advance();
        c.string()?;
    }
    if c.eat_keyword("PARTITIONED") {
        c.expect_keyword("BY")?;
        c.expect(&Token::LParen)?;
        loop {
            let (col, cpos) = c.ident()?;
            if !def.columns.iter().any(|x| x.name == col) {
                return Err(SqlError::invalid(
                    cpos,
                    format!("PARTITIONED BY {col}: table {} has no column named {col}", def.name),
                ));
            }
            if def.partition_by.contains(&col) {
                return Err(SqlError::invalid(cpos, format!("PARTITIONED BY lists column {col} twice")));
            }
            def.partition_by.push(col);
            if !c.eat(&Token::Comma) {
                break;
            }
        }
        c.expect(&Token::RParen)?;
    }
    c.expect_keyword("WITH")?;
    c.expect(&Token::LParen)?;
    loop {
        let (k, kpos) = c.string()?;
        c.expect(&Token::Eq)?;
        let (v, _) = c.string()?;
        if def.options.iter().any(|o| o.0 == k) {
            return Err(SqlError::invalid(kpos, format!("option '{k}' is given twice")));
        }
        def.options.push((k, v, kpos));
        if !c.eat(&Token::Comma) {
            break;
        }
    }
    c.expect(&Token::RParen)?;
    if !c.at_end() {
        return Err(SqlError::syntax(c.pos(), format!("unexpected {} after the table definition", c.describe_next())));
    }
    Ok(def)
}

/// Parses `CREATE [TEMPORARY] VIEW name AS query`; returns the name, its position and the
/// query's tokens.
pub fn parse_create_view(toks: &[Tok]) -> Result<(String, Pos, Vec<Tok>)> {
    let mut c = Cursor::new(toks);
    c.expect_keyword("CREATE")?;
    c.eat_keyword("TEMPORARY");
    c.expect_keyword("VIEW")?;
    if c.eat_keyword("IF") {
        c.expect_keyword("NOT")?;
        c.expect_keyword("EXISTS")?;
    }
    let (name, pos) = c.ident()?;
    if c.peek().is_some_and(|t| t.token == Token::LParen) {
        return Err(SqlError::unsupported(
            c.pos(),
            "a column list on a view",
            Some("name the columns with AS in the view's SELECT"),
        ));
    }
    c.expect_keyword("AS")?;
    let start = c.index();
    if c.at_end() {
        return Err(SqlError::syntax(c.pos(), format!("view {name} has no query after AS")));
    }
    Ok((name, pos, toks[start..].to_vec()))
}

fn word(value: &str) -> Token {
    Token::Word(datafusion::sql::sqlparser::tokenizer::Word {
        value: value.to_string(),
        quote_style: None,
        keyword: datafusion::sql::sqlparser::keywords::Keyword::NoKeyword,
    })
}

/// Replaces each reference to a view in a FROM or JOIN position by `(its query) AS name`,
/// recursively (a view may use another view).
pub fn inline_views(
    toks: &[Tok],
    views: &std::collections::HashMap<String, Vec<Tok>>,
    depth: usize,
) -> Result<Vec<Tok>> {
    inline_counted(toks, views, depth, &mut 0)
}

/// `inline_views`, counting the views inlined so far in `expansions` (views used inside views
/// multiply: past `limits::MAX_VIEW_EXPANSIONS` the query is refused before it is built).
fn inline_counted(
    toks: &[Tok],
    views: &std::collections::HashMap<String, Vec<Tok>>,
    depth: usize,
    expansions: &mut usize,
) -> Result<Vec<Tok>> {
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    let mut prev: Option<Token> = None;
    // Inside a FROM clause, a comma separates table references; elsewhere it does not.
    let mut in_from = false;
    for (ti, t) in toks.iter().enumerate() {
        if let Token::Word(w) = &t.token
            && w.quote_style.is_none()
        {
            let kw = w.value.to_ascii_uppercase();
            if kw == "FROM" {
                in_from = true;
            } else if matches!(
                kw.as_str(),
                "WHERE" | "GROUP" | "HAVING" | "ORDER" | "LIMIT" | "UNION" | "SELECT" | "ON" | "WINDOW"
            ) {
                in_from = false;
            }
        }
        let name = match &t.token {
            Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
            Token::Word(w) => Some(w.value.clone()),
            _ => None,
        };
        let after_from = matches!(&prev, Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("FROM") || w.value.eq_ignore_ascii_case("JOIN"))
            || (in_from && matches!(&prev, Some(Token::Comma)));
        match name.as_ref().and_then(|n| views.get(n).map(|q| (n, q))) {
            Some((n, query)) if after_from => {
                if depth > 16 {
                    return Err(SqlError::invalid(t.pos, format!("view {n} refers to itself (through other views)")));
                }
                *expansions += 1;
                if *expansions > crate::limits::MAX_VIEW_EXPANSIONS {
                    return Err(SqlError::unsupported(
                        t.pos,
                        format!(
                            "a query that inlines views more than {} times (each use of a view inlines it, and \
                             the views it uses; Keel's limit)",
                            crate::limits::MAX_VIEW_EXPANSIONS
                        ),
                        Some("use views inside views fewer times"),
                    ));
                }
                let inner = inline_counted(query, views, depth + 1, expansions)?;
                out.push(Tok { token: Token::LParen, pos: t.pos });
                out.extend(inner);
                out.push(Tok { token: Token::RParen, pos: t.pos });
                // The query's own alias (`FROM v AS x`, `FROM v x`) names the subquery instead.
                let next = toks[ti + 1..].iter().find(|x| !is_ws(&x.token)).map(|x| &x.token);
                let aliased = matches!(next, Some(Token::Word(w))
                    if w.quote_style.is_some() || matches!(w.keyword, Keyword::AS | Keyword::NoKeyword));
                if aliased {
                    prev = Some(t.token.clone());
                    continue;
                }
                out.push(Tok {
                    token: Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
                    pos: t.pos,
                });
                out.push(Tok { token: word("AS"), pos: t.pos });
                out.push(Tok {
                    token: Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
                    pos: t.pos,
                });
                out.push(Tok { token: word(n), pos: t.pos });
            }
            _ => out.push(t.clone()),
        }
        if !is_ws(&t.token) {
            prev = Some(t.token.clone());
        }
    }
    Ok(out)
}

/// Finds the first occurrence of a keyword sequence (for positions of plan-level errors).
pub fn find_keyword(toks: &[Tok], words: &[&str]) -> Option<Pos> {
    let sig: Vec<&Tok> = toks.iter().filter(|t| !is_ws(&t.token)).collect();
    (0..sig.len()).find_map(|i| {
        let hit = words.iter().enumerate().all(|(k, w)| {
            matches!(sig.get(i + k).map(|t| &t.token), Some(Token::Word(x)) if x.value.eq_ignore_ascii_case(w))
        });
        hit.then(|| sig[i].pos)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDL: &str = "CREATE TABLE events (\n  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),\n  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND\n) WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json')";

    #[test]
    fn parses_flink_ddl() {
        let stmts = split_statements(tokenize(DDL).unwrap());
        let def = parse_create_table(&stmts[0]).unwrap();
        assert_eq!(def.name, "events");
        assert_eq!(def.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["user_id", "amount", "ts"]);
        assert_eq!(def.columns[2].data_type, DataType::Timestamp(TimeUnit::Millisecond, None));
        let wm = def.watermark.as_ref().unwrap();
        assert_eq!((wm.column.as_str(), wm.delay_ms), ("ts", 1000));
        assert_eq!(def.option("topic"), Some("events"));
    }

    #[test]
    fn errors_point_at_the_token() {
        let sql = "CREATE TABLE t (\n  a GEOMETRY\n) WITH ('connector' = 'print')";
        let err = parse_create_table(&split_statements(tokenize(sql).unwrap())[0]).unwrap_err();
        assert_eq!(err.to_string().split(':').next().unwrap(), "line 2, column 5");
        assert!(err.to_string().contains("column type GEOMETRY is not supported"), "{err}");
    }

    #[test]
    fn parses_partitioned_by_and_checks_its_columns() {
        let parse = |sql: &str| parse_create_table(&split_statements(tokenize(sql).unwrap())[0]);
        let def = parse("CREATE TABLE s (a INT, dt STRING, hm STRING) PARTITIONED BY (dt, hm) WITH ('k' = 'v')");
        assert_eq!(def.unwrap().partition_by, vec!["dt".to_string(), "hm".to_string()]);
        assert!(parse(DDL).unwrap().partition_by.is_empty());
        for (sql, want) in [
            (
                "CREATE TABLE s (dt STRING)\nPARTITIONED BY (dt, zz) WITH ()",
                "line 2, column 21: PARTITIONED BY zz: table s",
            ),
            ("CREATE TABLE s (dt STRING) PARTITIONED BY (dt, dt) WITH ()", "PARTITIONED BY lists column dt twice"),
        ] {
            assert!(parse(sql).unwrap_err().to_string().contains(want), "{sql}: {:?}", parse(sql));
        }
    }
}
