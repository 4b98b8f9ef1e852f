//! Plan-time limits on what SQL can make Keel build, so that no pipeline text can exhaust the
//! planner's stack, the machine's memory or minutes of planning: expression nesting, CASE
//! branches, and literal lengths of the functions that build strings (LPAD, RPAD, REPEAT; their
//! lengths from data are checked when rows are computed, `scalar.rs`). Window counts per row
//! are bounded in `keel_types::window`, generator options in `connectors`, the parallelism here.
//!
//! Invariants: every refusal names the construct, its line and column and the limit, and
//! happens before DataFusion sees the text (the nesting check reads tokens, so no deep tree is
//! ever built); planning runs on a thread of its own with `PLANNING_STACK_BYTES` of stack, a
//! second line of defence that does not depend on the caller's thread.
//!
//! The nesting estimate is an upper bound of the depth of the tree the parser would build: the
//! whole expression is level 1, each operator of a chain (`a + b + c` is a tree as deep as it
//! has operators) adds one, and a parenthesis, bracket, call or CASE opens a level below the
//! current one; a comma (the next item of a list) ends a chain, as do WHEN, THEN and ELSE in a
//! CASE. Keywords that could be column names never end one.

use crate::error::{Pos, Result, SqlError};
use crate::script::Tok;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

/// The deepest expression Keel plans, counted as the module's doc says: 256 levels. A chain of
/// 256 `+` terms plans in under a second in a debug build (0.7 s; 4,000 terms overflowed the
/// planner's stack and aborted the process, 2,000 took 50 s, the cost growing with the square).
pub const MAX_EXPRESSION_DEPTH: usize = 256;

/// The most WHEN branches of one CASE: 100. DataFusion's simplifier rewrites a CASE compared
/// with a literal (`WHERE CASE ... END <> 'x'`) in time that grows with the cube of its branches:
/// 100 plan in 0.5 s in a debug build, 400 in 16 s, 1,000 did not finish in a minute, and
/// 10,000 took 4 GB within 16 s.
pub const MAX_CASE_BRANCHES: usize = 100;

/// The longest string LPAD and RPAD (a length in characters, as Flink counts) and REPEAT (in
/// bytes) build: 1 MiB. A literal length above it is refused at plan time; a longer result from
/// data fails the job with the function, the length and the limit (Flink has no NULL for it:
/// its task runs out of memory).
pub const MAX_BUILT_STRING: usize = 1 << 20;

/// The most bytes one call of LPAD, RPAD or REPEAT builds for one batch of rows: 256 MiB (a
/// batch of 8,192 rows at 32 KiB each). Past it the job fails, naming the function.
pub const MAX_STRING_BATCH_BYTES: usize = 256 << 20;

/// The most views one query inlines, counting each use and the views they use in turn: 256.
/// Views used twice inside views double at each level: 14 levels of `v JOIN v` (32,767 uses)
/// planned for over a minute; 8 levels (511) in 1.8 s in a debug build.
pub const MAX_VIEW_EXPANSIONS: usize = 256;

/// The longest string literal in a pipeline: 64 KiB. DataFusion gives a literal argument of many
/// functions to them as a column, one copy per row (64 KiB × 8,192 rows = 512 MiB).
pub const MAX_LITERAL_BYTES: usize = 64 << 10;

/// The stack of the thread that plans a pipeline: 64 MiB (reserved, used as touched). DataFusion's
/// planner and optimizer recurse over expressions; at `MAX_EXPRESSION_DEPTH` a debug build uses a
/// few MiB, more than a test thread's 2 MiB.
const PLANNING_STACK_BYTES: usize = 64 << 20;

/// Runs `f` (planning) on a thread with `PLANNING_STACK_BYTES` of stack and returns its result;
/// a panic in it is resumed here.
pub(crate) fn on_planning_stack<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        let planner = std::thread::Builder::new()
            .name("keel-planner".into())
            .stack_size(PLANNING_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| {
                SqlError::Runtime(keel_runtime::RuntimeError::External(format!(
                    "cannot start the planning thread: {e}"
                )))
            })?;
        match planner.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A parenthesised (or bracketed, or CASE) part of an expression being read.
struct Group {
    /// The level of this group's own expression.
    base: usize,
    /// Operators of the current chain in this group.
    ops: usize,
    /// For a CASE: where it starts and how many WHEN branches it has so far.
    case: Option<(Pos, usize)>,
}

impl Group {
    fn depth(&self) -> usize {
        self.base + self.ops
    }
}

fn is_string_literal(t: &Token) -> bool {
    use Token::*;
    matches!(
        t,
        SingleQuotedString(_)
            | DoubleQuotedString(_)
            | TripleSingleQuotedString(_)
            | TripleDoubleQuotedString(_)
            | DollarQuotedString(_)
            | SingleQuotedByteStringLiteral(_)
            | DoubleQuotedByteStringLiteral(_)
            | TripleSingleQuotedByteStringLiteral(_)
            | TripleDoubleQuotedByteStringLiteral(_)
            | SingleQuotedRawStringLiteral(_)
            | DoubleQuotedRawStringLiteral(_)
            | TripleSingleQuotedRawStringLiteral(_)
            | TripleDoubleQuotedRawStringLiteral(_)
            | NationalStringLiteral(_)
            | QuoteDelimitedStringLiteral(_)
            | NationalQuoteDelimitedStringLiteral(_)
            | EscapedStringLiteral(_)
            | UnicodeStringLiteral(_)
            | HexStringLiteral(_)
    )
}

/// Whether `t` joins two operands into a deeper tree (or nests one, as unary minus and NOT do).
/// Every symbol that is not a literal, a separator or a bracket counts: over-counting only makes
/// the estimate safer.
fn is_operator(t: &Token) -> bool {
    use Token::*;
    match t {
        Word(w) => {
            w.quote_style.is_none()
                && matches!(
                    w.keyword,
                    Keyword::AND
                        | Keyword::OR
                        | Keyword::NOT
                        | Keyword::IS
                        | Keyword::LIKE
                        | Keyword::ILIKE
                        | Keyword::SIMILAR
                        | Keyword::RLIKE
                        | Keyword::REGEXP
                        | Keyword::BETWEEN
                        | Keyword::IN
                        | Keyword::COLLATE
                        | Keyword::AT
                        | Keyword::DIV
                        | Keyword::XOR
                )
        }
        Number(..) | Char(_) | Whitespace(_) | Comma | Period | SemiColon | EOF | LParen | RParen | LBracket
        | RBracket | LBrace | RBrace | Placeholder(_) => false,
        other => !is_string_literal(other),
    }
}

/// Refuses expressions nested deeper than `MAX_EXPRESSION_DEPTH` and CASEs with more than
/// `MAX_CASE_BRANCHES` branches, reading tokens only (see the module's doc).
pub(crate) fn check_nesting(toks: &[Tok]) -> Result<()> {
    let top = || Group { base: 1, ops: 0, case: None };
    let mut stack = vec![top()];
    for t in toks {
        let depth = stack.last().map_or(1, Group::depth);
        let keyword = match &t.token {
            Token::Word(w) if w.quote_style.is_none() => w.keyword,
            _ => Keyword::NoKeyword,
        };
        let in_case = stack.last().is_some_and(|g| g.case.is_some());
        match &t.token {
            Token::SemiColon => stack = vec![top()],
            Token::LParen | Token::LBracket | Token::LBrace => {
                // `a[1][2]...` nests too: a bracket after an operand deepens the chain.
                if t.token == Token::LBracket
                    && let Some(g) = stack.last_mut()
                {
                    g.ops += 1;
                }
                let base = stack.last().map_or(1, Group::depth) + 1;
                stack.push(Group { base, ops: 0, case: None });
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                // A CASE left open inside the brackets closes with them (the parser refuses it).
                while stack.len() > 1 && stack.last().is_some_and(|g| g.case.is_some()) {
                    stack.pop();
                }
                if stack.len() > 1 {
                    stack.pop();
                }
            }
            Token::Comma => {
                if let Some(g) = stack.last_mut() {
                    g.ops = 0;
                }
            }
            _ if keyword == Keyword::CASE => {
                stack.push(Group { base: depth + 1, ops: 0, case: Some((t.pos, 0)) });
            }
            _ if in_case && keyword == Keyword::END => {
                stack.pop();
            }
            _ if in_case && matches!(keyword, Keyword::WHEN | Keyword::THEN | Keyword::ELSE) => {
                if let Some(g) = stack.last_mut() {
                    g.ops = 0;
                    if keyword == Keyword::WHEN
                        && let Some((pos, branches)) = g.case.as_mut()
                    {
                        *branches += 1;
                        if *branches > MAX_CASE_BRANCHES {
                            return Err(SqlError::unsupported(
                                *pos,
                                format!("a CASE with more than {MAX_CASE_BRANCHES} WHEN branches (Keel's limit)"),
                                Some("look the values up with a join on a table of them, or split the CASE"),
                            ));
                        }
                    }
                }
            }
            token if is_string_literal(token) && token.to_string().len() > MAX_LITERAL_BYTES + 2 => {
                return Err(SqlError::unsupported(
                    t.pos,
                    format!(
                        "a string literal of {} bytes, over the limit of {MAX_LITERAL_BYTES} bytes (64 KiB)",
                        token.to_string().len() - 2
                    ),
                    Some("read long values from a table (a file or a topic) instead"),
                ));
            }
            token if is_operator(token) => {
                if let Some(g) = stack.last_mut() {
                    g.ops += 1;
                }
            }
            _ => {}
        }
        if stack.last().map_or(1, Group::depth) > MAX_EXPRESSION_DEPTH {
            return Err(SqlError::unsupported(
                t.pos,
                format!(
                    "an expression nested more than {MAX_EXPRESSION_DEPTH} levels deep (each operator of a chain \
                     such as a + b + c, and each parenthesis, call or CASE, is a level; Keel's limit)"
                ),
                Some("split it into columns of a view, or write a long OR of equalities as x IN (...)"),
            ));
        }
    }
    Ok(())
}

/// `inline_views` of `query`, checked again: views used inside views nest their expressions.
pub(crate) fn inline_checked(query: &[Tok], views: &std::collections::HashMap<String, Vec<Tok>>) -> Result<Vec<Tok>> {
    let inlined = crate::script::inline_views(query, views, 0)?;
    check_nesting(&inlined)?;
    Ok(inlined)
}

/// An integer literal (after the optimizer folded constants, `1024 * 1024` is one).
fn literal_int(e: &Expr) -> Option<i128> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int8(Some(n)) => Some(i128::from(*n)),
            ScalarValue::Int16(Some(n)) => Some(i128::from(*n)),
            ScalarValue::Int32(Some(n)) => Some(i128::from(*n)),
            ScalarValue::Int64(Some(n)) => Some(i128::from(*n)),
            ScalarValue::UInt8(Some(n)) => Some(i128::from(*n)),
            ScalarValue::UInt16(Some(n)) => Some(i128::from(*n)),
            ScalarValue::UInt32(Some(n)) => Some(i128::from(*n)),
            ScalarValue::UInt64(Some(n)) => Some(i128::from(*n)),
            _ => None,
        },
        Expr::Cast(c) => literal_int(&c.expr),
        Expr::TryCast(c) => literal_int(&c.expr),
        Expr::Alias(a) => literal_int(&a.expr),
        _ => None,
    }
}

/// The bytes of a string literal.
fn literal_len(e: &Expr) -> Option<usize> {
    match e {
        Expr::Literal(v, _) => v.try_as_str().flatten().map(str::len),
        Expr::Cast(c) => literal_len(&c.expr),
        Expr::Alias(a) => literal_len(&a.expr),
        _ => None,
    }
}

/// The refusal of `e` if it is LPAD, RPAD or REPEAT with a literal length over `MAX_BUILT_STRING`;
/// `query` places it.
fn string_call_refusal(e: &Expr, query: &[Tok], fallback: Pos) -> Option<SqlError> {
    let Expr::ScalarFunction(f) = e else { return None };
    let name = f.func.name().to_ascii_uppercase();
    let (length, built) = match name.as_str() {
        "LPAD" | "RPAD" => {
            let n = literal_int(f.args.get(1)?)?;
            (n, n)
        }
        "REPEAT" => {
            let n = literal_int(f.args.get(1)?)?;
            // A literal string makes the result's length known; otherwise one byte a copy.
            let bytes = f.args.first().and_then(literal_len).unwrap_or(1).max(1) as i128;
            (n, n.saturating_mul(bytes))
        }
        _ => return None,
    };
    if built <= MAX_BUILT_STRING as i128 {
        return None;
    }
    let pos = crate::script::find_keyword(query, &[&name]).unwrap_or(fallback);
    let unit = if name == "REPEAT" { "bytes" } else { "characters" };
    Some(SqlError::unsupported(
        pos,
        format!(
            "{name} with the length {length}, which builds strings of {built} {unit}, over the limit of \
             {MAX_BUILT_STRING} {unit} (1 MiB) per value"
        ),
        Some("build shorter strings"),
    ))
}

/// Refuses LPAD, RPAD and REPEAT calls in `plan` (and its subqueries) with literal lengths over
/// `MAX_BUILT_STRING`. Run before the optimizer (which would evaluate an all-literal call) and
/// after it (which folds `1024 * 1024 * 1024` into a literal).
pub(crate) fn check_string_calls(plan: &LogicalPlan, query: &[Tok]) -> Result<()> {
    let mut refusal = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                refusal = string_call_refusal(x, query, Pos::default());
                Ok(if refusal.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
            })
        })
    });
    refusal.map_or(Ok(()), Err)
}

/// `check_string_calls` for one expression (a computed column), placed at `pos`.
pub(crate) fn check_string_calls_in(e: &Expr, pos: Pos) -> Result<()> {
    let mut refusal = None;
    let _ = e.apply(|x| {
        refusal = string_call_refusal(x, &[], pos);
        Ok(if refusal.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    refusal.map_or(Ok(()), Err)
}

/// Refuses a parallelism no job can run: 0, or more subtasks than key groups (a subtask
/// beyond them would own no key group, and each exchange holds parallelism² channels: 4,096
/// subtasks took 22 GB in two minutes on three events).
pub(crate) fn check_parallelism(parallelism: u32) -> Result<()> {
    let most = keel_types::DEFAULT_KEY_GROUPS;
    if parallelism == 0 || parallelism > most {
        return Err(SqlError::Options(format!(
            "parallelism {parallelism}: a job runs 1 to {most} subtasks per operator (keyed state is divided into \
             {most} key groups, and each subtask needs one); use --parallelism between 1 and {most}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
