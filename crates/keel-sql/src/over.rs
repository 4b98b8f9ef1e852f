//! Planning `OVER` aggregations (`agg(x) OVER (PARTITION BY ... ORDER BY time ROWS|RANGE
//! BETWEEN ... PRECEDING AND CURRENT ROW)`) onto the runtime's event-time OVER operator.
//!
//! Invariants (Flink's rules): the ORDER BY is the stream's event-time attribute, ascending; the
//! frame ends at the current row; every call of one window node shares partition, order and frame;
//! the input is append-only. Anything else is refused with its position.

use crate::error::{Result, SqlError};
use crate::plan::{PlannedInput, PlannedOp};
use crate::planner::strip_alias;
use crate::translate::{Stream, Translator};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, WindowFrameBound, WindowFrameUnits};
use keel_runtime::ops::{AggregateCall, AggregateFunction, OverFrame, OverSpec};
use std::sync::Arc;

fn refuse(t: &Translator<'_>, what: impl Into<String>, alt: Option<&str>) -> SqlError {
    SqlError::unsupported(crate::script::find_keyword(t.query, &["OVER"]).unwrap_or_default(), what, alt)
}

fn preceding_millis(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000 + i.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => Some(i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds)),
        _ => None,
    }
}

pub(crate) fn plan_over(t: &mut Translator<'_>, w: &datafusion::logical_expr::Window) -> Result<Stream> {
    let s = t.translate(&w.input)?;
    if s.updating {
        return Err(refuse(t, "an OVER aggregation over an updating input", None));
    }
    let input = w.input.schema();
    let mut shape = None;
    let mut calls = vec![];
    let n_in = input.fields().len();
    for (i, e) in w.window_expr.iter().enumerate() {
        let Expr::WindowFunction(f) = strip_alias(e) else {
            return Err(refuse(t, "this OVER expression", None));
        };
        let name = f.fun.name().to_ascii_lowercase();
        if crate::planner::numbering(&name).is_some() {
            return Err(refuse(
                t,
                format!("{}() without a Top-N filter", name.to_uppercase()),
                Some("filter on the number (WHERE rownum <= N) for a Top-N, or partition by window_start, window_end"),
            ));
        }
        let arg = f.params.args.first();
        let literal = matches!(arg, Some(Expr::Literal(v, _)) if !v.is_null());
        let func = match (name.as_str(), literal || arg.is_none()) {
            ("count", true) => AggregateFunction::CountStar,
            ("count", false) => AggregateFunction::Count,
            ("sum", _) => AggregateFunction::Sum,
            ("avg", _) => AggregateFunction::Avg,
            ("min", _) => AggregateFunction::Min,
            ("max", _) => AggregateFunction::Max,
            (other, _) => {
                return Err(refuse(
                    t,
                    format!("{} OVER (...)", other.to_uppercase()),
                    Some("use COUNT, SUM, AVG, MIN or MAX over a window"),
                ));
            }
        };
        if f.params.distinct {
            return Err(refuse(t, "DISTINCT in an OVER aggregation", None));
        }
        let arg = match (func, arg) {
            (AggregateFunction::CountStar, _) | (_, None) => None,
            (_, Some(a)) => match strip_alias(a) {
                Expr::Column(c) => Some(input.index_of_column(c).map_err(crate::planner::planning("OVER argument"))?),
                _ => {
                    return Err(refuse(
                        t,
                        "an OVER aggregation of an expression",
                        Some("compute the expression in a subquery or view and aggregate its column"),
                    ));
                }
            },
        };
        let output_type = w.schema.field(n_in + i).data_type().clone();
        calls.push(AggregateCall { func, arg, output_type, user: None });
        let this = (f.params.partition_by.clone(), f.params.order_by.clone(), f.params.window_frame.clone());
        match &shape {
            None => shape = Some(this),
            Some(prev) if *prev == this => {}
            Some(_) => {
                return Err(refuse(t, "OVER calls with different windows in one SELECT", Some("use one window")));
            }
        }
    }
    let Some((partition_by, order_by, frame)) = shape else {
        return Err(refuse(t, "an empty OVER node", None));
    };
    let mut partition_cols = vec![];
    for p in &partition_by {
        let Expr::Column(c) = strip_alias(p) else {
            return Err(refuse(t, "a PARTITION BY expression in OVER", Some("partition by columns")));
        };
        partition_cols.push(input.index_of_column(c).map_err(crate::planner::planning("OVER partition"))?);
    }
    let time_col = match order_by.as_slice() {
        [o] if o.asc => match strip_alias(&o.expr) {
            Expr::Column(c) => input.index_of_column(c).ok(),
            _ => None,
        },
        _ => None,
    };
    let Some(time_col) = time_col.filter(|c| Some(*c) == s.rowtime) else {
        return Err(refuse(
            t,
            "an OVER window not ordered by the event-time attribute ascending",
            Some("ORDER BY the column the table's WATERMARK is declared on"),
        ));
    };
    if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
        return Err(refuse(t, "an OVER frame that does not end at CURRENT ROW", None));
    }
    let frame = match (&frame.units, &frame.start_bound) {
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) if v.is_null() => OverFrame::Rows(u64::MAX),
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => {
            let n = v.cast_to(&arrow::datatypes::DataType::UInt64).ok().and_then(|v| u64::try_from(v).ok());
            OverFrame::Rows(n.ok_or_else(|| refuse(t, format!("ROWS {v} PRECEDING"), None))?)
        }
        (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => OverFrame::Rows(0),
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) if v.is_null() => OverFrame::Unbounded,
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => OverFrame::RangeMillis(
            preceding_millis(v)
                .ok_or_else(|| refuse(t, format!("RANGE {v} PRECEDING"), Some("give the range as an INTERVAL")))?,
        ),
        (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => OverFrame::RangeMillis(0),
        (units, start) => return Err(refuse(t, format!("an OVER frame {units} from {start}"), None)),
    };
    let spec = OverSpec {
        input_schema: Arc::new(input.as_arrow().clone()),
        partition_cols: partition_cols.clone(),
        time_col,
        frame,
        aggregates: calls,
        output_schema: Arc::new(w.schema.as_arrow().clone()),
        late_output: None,
    };
    t.stages.push(crate::plan::PlannedStage {
        input: PlannedInput::Exchange { from: s.stage, keys: partition_cols },
        ops: vec![PlannedOp::Over(
            Arc::new(spec),
            s.table.as_ref().and_then(|n| t.tables.get(n)).cloned().map(Box::new),
        )],
    });
    Ok(Stream { stage: t.stages.len() - 1, partitioned: None, table: None, ..s })
}
