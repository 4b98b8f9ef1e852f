//! Type errors, refused before a job starts and said in SQL's terms: which column, which types,
//! what to write instead.
//!
//! Three places:
//! - `check_plan`: a comparison or arithmetic between a string and a number. Flink refuses it;
//!   DataFusion would cast the string at run time, so the job would start and fail on the first
//!   row that is not a number.
//! - `coercion_error`: DataFusion's own coercion failures (`SUM(name)`, `amount + name`, `amount
//!   LIKE ...`), which say neither where nor which column; rewritten to name the function or
//!   operator, its arguments as written and their types, at the call's position.
//! - `sink_accepts`: which query column types an `INSERT INTO` column takes: a type of the same
//!   kind (Flink's implicit casts); `DOUBLE` into `BIGINT` or `BIGINT` into `VARCHAR` needs a
//!   CAST. Unlike Flink, a narrower integer or floating-point column takes a wider one, because
//!   DataFusion types every integer literal as BIGINT and every decimal literal as DOUBLE
//!   (`SELECT 0` into an INT column must work); the cast then runs on each value.
//!
//! Invariant: these only refuse; a query they accept plans exactly as before.

use crate::error::{Pos, Result, SqlError};
use crate::script::{self, Tok};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ExprSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::sql::sqlparser::tokenizer::Token;

/// The SQL name of an Arrow type, as a Flink user writes it.
pub(crate) fn sql_type(t: &DataType) -> String {
    use DataType::*;
    match t {
        Int8 | UInt8 => "TINYINT".into(),
        Int16 | UInt16 => "SMALLINT".into(),
        Int32 | UInt32 => "INT".into(),
        Int64 | UInt64 => "BIGINT".into(),
        Float32 => "FLOAT".into(),
        Float64 => "DOUBLE".into(),
        Decimal128(p, s) | Decimal256(p, s) => format!("DECIMAL({p}, {s})"),
        Utf8 | LargeUtf8 | Utf8View => "VARCHAR".into(),
        Boolean => "BOOLEAN".into(),
        Date32 | Date64 => "DATE".into(),
        Timestamp(_, None) => "TIMESTAMP".into(),
        Timestamp(_, Some(_)) => "TIMESTAMP_LTZ".into(),
        Null => "NULL".into(),
        other => other.to_string(),
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Comparisons and arithmetic, the operators Flink refuses between a string and a number.
fn strict(op: &Operator) -> bool {
    use Operator::*;
    matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq) || op.is_numerical_operators()
}

/// How `e` reads in the query: a column's name, a literal's SQL, or the expression's display.
fn shown(e: &Expr) -> String {
    match e {
        Expr::Column(c) => c.name.clone(),
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => format!("'{s}'"),
        Expr::Literal(v, _) => v.to_string(),
        other => other.to_string(),
    }
}

/// The first string-and-number comparison or arithmetic in `plan`'s expressions (before
/// DataFusion's coercion), as an error at the column it involves.
pub(crate) fn check_plan(plan: &LogicalPlan, query: &[Tok]) -> Result<()> {
    let mut found: Option<SqlError> = None;
    let _ = plan.apply(|node| {
        let inputs = node.inputs();
        // A join's expressions read both sides: only then is a schema built (the others are read
        // in place).
        let joined: DFSchema;
        let schema: &DFSchema = match inputs.as_slice() {
            [one] => one.schema(),
            [l, r] => match l.schema().join(r.schema()) {
                Ok(s) => {
                    joined = s;
                    &joined
                }
                Err(_) => return Ok(TreeNodeRecursion::Continue),
            },
            _ => return Ok(TreeNodeRecursion::Continue),
        };
        let _ = node.apply_expressions(|e| {
            let _ = e.apply(|x| {
                if found.is_none()
                    && let Expr::BinaryExpr(b) = x
                {
                    found = mixed(b, schema, query);
                }
                Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
            });
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found.map_or(Ok(()), Err)
}

/// The error for `b` if it compares or combines a string with a number.
fn mixed(b: &BinaryExpr, schema: &dyn ExprSchema, query: &[Tok]) -> Option<SqlError> {
    if !strict(&b.op) {
        return None;
    }
    let (lt, rt) = (b.left.get_type(schema).ok()?, b.right.get_type(schema).ok()?);
    let (string, number_type) = if is_string(&lt) && rt.is_numeric() {
        (&b.left, &rt)
    } else if is_string(&rt) && lt.is_numeric() {
        (&b.right, &lt)
    } else {
        return None;
    };
    let pos = [b.left.as_ref(), b.right.as_ref()]
        .iter()
        .find_map(|e| match e {
            Expr::Column(c) => script::find_keyword(query, &[c.name.as_str()]),
            _ => None,
        })
        .unwrap_or_default();
    Some(SqlError::invalid(
        pos,
        format!(
            "type error: {} ({}) {} {} ({}): a string and a number cannot be compared or combined; \
             CAST one of them, for example CAST({} AS {})",
            shown(&b.left),
            sql_type(&lt),
            b.op,
            shown(&b.right),
            sql_type(&rt),
            shown(string),
            sql_type(number_type),
        ),
    ))
}

/// DataFusion's coercion failure `message`, said with the call as written, its types and its
/// position; `None` for other errors.
pub(crate) fn coercion_error(message: &str, query: &[Tok]) -> Option<SqlError> {
    // "No function matches the given name and argument types 'sum(Utf8)'."
    if let Some(at) = message.find("No function matches the given name and argument types '") {
        let rest = &message[at + "No function matches the given name and argument types '".len()..];
        let call = &rest[..rest.find('\'')?];
        let (name, args) = call.split_once('(')?;
        let types: Vec<String> =
            args.trim_end_matches(')').split(',').map(|t| arrow_name(t.trim())).filter(|t| !t.is_empty()).collect();
        let (pos, written) = call_as_written(query, name)?;
        return Some(SqlError::invalid(
            pos,
            format!(
                "type error: {written} takes no argument of type {}; CAST the argument or use a column of a type \
                 {} accepts",
                types.join(", "),
                name.to_uppercase()
            ),
        ));
    }
    // "Cannot coerce arithmetic expression Int64 + Utf8 to valid types"
    if let Some(at) = message.find("Cannot coerce arithmetic expression ") {
        let rest = &message[at + "Cannot coerce arithmetic expression ".len()..];
        let expr = &rest[..rest.find(" to valid types")?];
        let mut parts = expr.split(' ');
        let (l, op, r) = (parts.next()?, parts.next()?, parts.next()?);
        let pos = find_symbol(query, op).unwrap_or_default();
        return Some(SqlError::invalid(
            pos,
            format!(
                "type error: {} {op} {}: {op} takes two numbers (or times and intervals); CAST the operand that is not",
                arrow_name(l),
                arrow_name(r)
            ),
        ));
    }
    // "There isn't a common type to coerce Int64 and Utf8 in LIKE expression"
    if let Some(at) = message.find("There isn't a common type to coerce ") {
        let rest = &message[at + "There isn't a common type to coerce ".len()..];
        let (l, rest) = rest.split_once(" and ")?;
        let (r, rest) = rest.split_once(" in ")?;
        let what = rest.trim_end_matches(" expression").trim();
        let pos = script::find_keyword(query, &[what]).unwrap_or_default();
        return Some(SqlError::invalid(
            pos,
            format!(
                "type error: {what} of {} and {}: both sides must be strings; CAST the other one to VARCHAR",
                arrow_name(l),
                arrow_name(r)
            ),
        ));
    }
    None
}

/// The SQL name of a type DataFusion's messages print in Arrow's spelling (`Utf8`, `Int64`).
fn arrow_name(t: &str) -> String {
    let parsed = match t {
        "Utf8" | "LargeUtf8" | "Utf8View" => DataType::Utf8,
        "Int8" => DataType::Int8,
        "Int16" => DataType::Int16,
        "Int32" => DataType::Int32,
        "Int64" => DataType::Int64,
        "Float32" => DataType::Float32,
        "Float64" => DataType::Float64,
        "Boolean" => DataType::Boolean,
        "Date32" => DataType::Date32,
        other => return other.to_string(),
    };
    sql_type(&parsed)
}

/// The position of the first call of function `name` in `query`, and the call as written
/// (`SUM(user_id)`).
fn call_as_written(query: &[Tok], name: &str) -> Option<(Pos, String)> {
    let sig: Vec<&Tok> = query.iter().filter(|t| !script::is_ws(&t.token)).collect();
    let i = (0..sig.len()).find(|&i| {
        matches!(&sig[i].token, Token::Word(w) if w.value.eq_ignore_ascii_case(name))
            && matches!(sig.get(i + 1).map(|t| &t.token), Some(Token::LParen))
    })?;
    let mut depth = 0;
    let mut text = String::new();
    for t in &sig[i..] {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if matches!(t.token, Token::Word(_)) && !text.ends_with('(') && !text.is_empty() && !text.ends_with('.') {
            text.push(' ');
        }
        text.push_str(&t.token.to_string());
        if depth == 0 && matches!(t.token, Token::RParen) {
            break;
        }
    }
    let upper = name.to_uppercase();
    let written = match text.split_once('(') {
        Some((_, args)) => format!("{upper}({args}"),
        None => text,
    };
    Some((sig[i].pos, written))
}

/// The position of the first token that is the operator `op` (`+`, `-`, ...).
fn find_symbol(query: &[Tok], op: &str) -> Option<Pos> {
    query.iter().find(|t| t.token.to_string() == op).map(|t| t.pos)
}

/// Whether an `INSERT INTO` column of type `to` takes a query column of type `from` without a
/// CAST: the same type, NULL, or a type of the same kind (see the module's note on literals).
pub(crate) fn sink_accepts(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    // Unsigned integers come from DataFusion's own functions (ROW_NUMBER() is UInt64).
    let int_rank = |t: &DataType| match t {
        Int8 | UInt8 => Some(1),
        Int16 | UInt16 => Some(2),
        Int32 | UInt32 => Some(3),
        Int64 | UInt64 => Some(4),
        _ => None,
    };
    if from == to || matches!(from, Null) {
        return true;
    }
    match (from, to) {
        (a, b) if int_rank(a).is_some() && int_rank(b).is_some() => true,
        (a, Float32 | Float64 | Decimal128(..) | Decimal256(..)) if int_rank(a).is_some() => true,
        (Float32 | Float64 | Decimal128(..) | Decimal256(..), Float32 | Float64 | Decimal128(..) | Decimal256(..)) => {
            true
        }
        (a, b) if is_string(a) && is_string(b) => true,
        (Timestamp(..) | Date32 | Date64, Timestamp(..)) => true,
        (Date32 | Date64, Date32 | Date64) => true,
        // Nested types: as Arrow casts them (the fields are checked by the cast).
        (List(_) | LargeList(_) | Struct(_) | Map(..), List(_) | LargeList(_) | Struct(_) | Map(..)) => {
            datafusion::arrow::compute::can_cast_types(from, to)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    #[test]
    fn sinks_take_the_same_or_a_wider_type_of_the_same_kind() {
        use DataType::*;
        for (from, to) in [
            (Int32, Int64),
            (Int64, Int32),
            (UInt64, Int64),
            (Int64, Int64),
            (Int64, Float64),
            (Float32, Float64),
            (Utf8, Utf8View),
            (Null, Utf8),
            (Timestamp(TimeUnit::Millisecond, None), Timestamp(TimeUnit::Microsecond, None)),
            (Date32, Timestamp(TimeUnit::Millisecond, None)),
        ] {
            assert!(sink_accepts(&from, &to), "{from} into {to}");
        }
        for (from, to) in [
            (Float64, Int64),
            (Int64, Utf8),
            (Utf8, Int64),
            (Boolean, Int64),
            (Timestamp(TimeUnit::Millisecond, None), Utf8),
        ] {
            assert!(!sink_accepts(&from, &to), "{from} into {to} needs a CAST");
        }
    }

    #[test]
    fn coercion_errors_name_the_call_and_its_types() {
        let query = script::tokenize("SELECT k, SUM(t.name) FROM t GROUP BY k").unwrap();
        let e = coercion_error(
            "Error during planning: ... No function matches the given name and argument types 'sum(Utf8)'. You might",
            &query,
        )
        .unwrap()
        .to_string();
        assert!(e.contains("SUM(t.name) takes no argument of type VARCHAR"), "{e}");
        assert!(e.starts_with("line 1, column 11"), "{e}");
        let query = script::tokenize("SELECT amount + name FROM t").unwrap();
        let e = coercion_error("Cannot coerce arithmetic expression Int64 + Utf8 to valid types", &query)
            .unwrap()
            .to_string();
        assert!(e.contains("BIGINT + VARCHAR") && e.starts_with("line 1, column 15"), "{e}");
        assert!(coercion_error("something else", &query).is_none());
    }

    #[test]
    fn like_on_a_number_is_a_type_error_at_like() {
        let query = script::tokenize("SELECT a FROM t WHERE amount LIKE 'x%'").unwrap();
        let e = coercion_error(
            "type_coercion\ncaused by\nError during planning: There isn't a common type to coerce Int64 and Utf8 in LIKE expression",
            &query,
        )
        .unwrap()
        .to_string();
        assert!(e.starts_with("line 1, column 30: type error: LIKE of BIGINT and VARCHAR"), "{e}");
    }
}
