//! Planning a pipeline: tables are registered in a DataFusion session (window TVF calls as
//! tables with the three window columns), the query is planned and optimized by DataFusion, and
//! the resulting logical plan is translated into Keel's streaming operators.
//!
//! Supported plan shapes (anything else is refused with the construct and its position):
//! `scan → (filter | projection)* → [window aggregate → (filter | projection)*] → sink`, where
//! the aggregate groups by `window_start` and `window_end` of a TUMBLE, HOP or CUMULATE window.
//!
//! Invariant: every refusal happens here, before any file is written or task started.

use crate::connectors::sink_kind;
use crate::error::{Pos, Result, SqlError};
pub use crate::plan::{AggregatePlan, InsertPlan, Step};
use crate::script::{self, ColumnDef, TableDef, Tok, WindowCall};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemTable;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use keel_runtime::ops::{AggregateCall, AggregateFunction, GroupColumn, TopNSpec};
use keel_types::WindowSpec;
use std::collections::HashMap;
use std::sync::Arc;

/// A table's computed columns resolved: the columns stored in records (`base`), and one
/// expression per table column computing it from them.
#[derive(Clone)]
pub struct Computed {
    pub base: SchemaRef,
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub schema: SchemaRef,
}

/// Types a table's computed columns (filling their `data_type`) and builds the expressions
/// that add them to decoded records. `None` when the table has no computed column.
pub fn resolve_computed(def: &mut TableDef) -> Result<Option<Computed>> {
    if def.columns.iter().all(|c| c.computed.is_none()) {
        return Ok(None);
    }
    let base_cols: Vec<&ColumnDef> = def.columns.iter().filter(|c| c.computed.is_none()).collect();
    let base = Arc::new(Schema::new(
        base_cols.iter().map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable)).collect::<Vec<_>>(),
    ));
    let df = DFSchema::try_from(base.as_ref().clone()).map_err(planning("computed columns"))?;
    let state = session().state();
    let mut exprs: Vec<Arc<dyn PhysicalExpr>> = vec![];
    for col in def.columns.iter_mut() {
        match &col.computed {
            None => {
                let i = base
                    .index_of(&col.name)
                    .map_err(|e| SqlError::Planning { context: "computed columns".into(), message: e.to_string() })?;
                exprs.push(Arc::new(datafusion::physical_expr::expressions::Column::new(&col.name, i)));
            }
            Some(sql) => {
                let bad = |e: datafusion::error::DataFusionError| {
                    SqlError::invalid(col.pos, format!("computed column {}: {}", col.name, e.strip_backtrace()))
                };
                // Flink's time syntax (FLOOR(t TO HOUR), TIMESTAMPADD(...)) as in queries.
                let sql = script::render(&crate::scalar_time::rewrite_time_syntax(&script::tokenize(sql)?)?);
                let e = state.create_logical_expr(&sql, &df).map_err(bad)?;
                crate::limits::check_string_calls_in(&e, col.pos)?;
                let (_, f) = e.to_field(&df).map_err(bad)?;
                col.data_type = f.data_type().clone();
                exprs.push(crate::case_lookup::compile(&state, e, &df).map_err(bad)?);
            }
        }
    }
    Ok(Some(Computed { base, exprs, schema: table_schema(def) }))
}

pub fn table_schema(def: &TableDef) -> SchemaRef {
    Arc::new(Schema::new(
        def.columns.iter().map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable)).collect::<Vec<_>>(),
    ))
}

fn ts_field(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, None), false)
}

pub(crate) fn planning(context: &str) -> impl Fn(datafusion::error::DataFusionError) -> SqlError + '_ {
    move |e| SqlError::Planning { context: context.to_string(), message: e.strip_backtrace() }
}

/// A session with Flink's identifier rules (case-sensitive, as written) and aggregate typing.
pub fn session() -> SessionContext {
    let mut config = datafusion::prelude::SessionConfig::new();
    config.options_mut().sql_parser.enable_ident_normalization = false;
    // COUNT(DISTINCT x) stays one aggregate: the streaming window aggregate keeps the distinct
    // values itself, so the rewrite into two nested aggregates is not wanted.
    let rules = datafusion::optimizer::Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .collect();
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    for f in crate::functions::flink_aggregates() {
        ctx.register_udaf(f);
    }
    for f in crate::scalar::flink_scalars() {
        ctx.register_udf(f);
    }
    for name in ["PROCTIME", "proctime"] {
        ctx.register_udf(proctime_udf(name));
    }
    ctx
}

/// Flink's `PROCTIME()`: the wall-clock time when the row is computed. A column computed by it
/// is a processing-time attribute: a TUMBLE window over it is a processing-time window.
fn proctime_udf(name: &str) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let body = |_: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
        let now = keel_types::time::now_ms();
        Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::TimestampMillisecond(Some(now), None)))
    };
    create_udf(name, vec![], DataType::Timestamp(TimeUnit::Millisecond, None), Volatility::Volatile, Arc::new(body))
}

/// Whether `e` is a call of `PROCTIME()`.
pub(crate) fn is_proctime(e: &Expr) -> bool {
    matches!(strip_alias(e), Expr::ScalarFunction(f) if f.func.name().eq_ignore_ascii_case("proctime"))
}

/// Pipeline-wide settings from `SET 'key' = 'value';` statements.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `'table.exec.state.ttl'`: forget state of keys idle this long (unwindowed operators).
    pub state_ttl: Option<std::time::Duration>,
}

/// A window TVF call resolved: the call, its spec, time column and generated table's schema.
#[derive(Clone)]
pub struct WindowInfo {
    pub call: WindowCall,
    pub spec: WindowSpec,
    pub time_col: usize,
    pub schema: SchemaRef,
    /// For a window over a view: the view's optimized plan (its rows feed the window assigner).
    pub view: Option<Arc<LogicalPlan>>,
    /// The window is over a `PROCTIME()` column of a table (for a view, the translation finds out).
    pub processing_time: bool,
}

/// Plans `INSERT INTO sink <query>`.
pub(crate) fn plan_insert(
    tables: &HashMap<String, TableDef>,
    sink_name: (&str, Pos),
    views: &HashMap<String, Vec<Tok>>,
    query: &[Tok],
    opts: &crate::PipelineOptions,
    settings: &Settings,
) -> Result<InsertPlan> {
    let job = opts.job.as_str();
    let sink = tables
        .get(sink_name.0)
        .ok_or_else(|| {
            SqlError::invalid(
                sink_name.1,
                format!("INSERT INTO {}: no table of that name is created above", sink_name.0),
            )
        })?
        .clone();
    let sink_kind = sink_kind(&sink)?;
    let mut tables = tables.clone();
    let mut computed = HashMap::new();
    for (name, def) in tables.iter_mut() {
        if let Some(c) = resolve_computed(def)? {
            computed.insert(name.clone(), c);
        }
    }
    let tables = &tables;
    let (rewritten, calls) = script::rewrite_window_calls(&crate::scalar_time::rewrite_time_syntax(query)?)?;
    let ctx = session();
    for f in &opts.udfs {
        ctx.register_udf(f.clone());
    }
    for f in &opts.udafs {
        ctx.register_udaf(f.clone());
    }
    for (name, def) in tables {
        let mem = MemTable::try_new(table_schema(def), vec![vec![]]).map_err(planning("registering tables"))?;
        ctx.register_table(name.as_str(), Arc::new(mem)).map_err(planning("registering tables"))?;
    }
    let mut windows = HashMap::new();
    for call in &calls {
        windows.insert(call.alias.clone(), register_window(&ctx, tables, views, call)?);
    }
    let sql = script::render(&rewritten);
    let state = ctx.state();
    let plan =
        futures::executor::block_on(state.create_logical_plan(&sql)).map_err(|e| crate::error::located(e, query))?;
    crate::type_check::check_plan(&plan, query)?;
    crate::limits::check_string_calls(&plan, query)?;
    // Refuse what the optimizer might otherwise quietly drop (an ORDER BY, for one).
    let mut refusal = None;
    let _ = plan.apply(|node| {
        if matches!(node, LogicalPlan::Sort(_) | LogicalPlan::Limit(_) | LogicalPlan::Union(_)) && refusal.is_none() {
            refusal = Some(unsupported_node(node, query));
        }
        if let LogicalPlan::Aggregate(a) = node
            && refusal.is_none()
        {
            for e in &a.aggr_expr {
                if let Expr::AggregateFunction(f) = strip_alias(e)
                    && f.params.distinct
                    && !f.func.name().eq_ignore_ascii_case("count")
                {
                    let name = f.func.name().to_uppercase();
                    let pos = script::find_keyword(query, &["DISTINCT"]).unwrap_or_default();
                    refusal = Some(SqlError::unsupported(
                        pos,
                        format!("{name}(DISTINCT ...)"),
                        Some("COUNT(DISTINCT ...) is supported"),
                    ));
                }
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    if let Some(e) = refusal {
        return Err(e);
    }
    let plan = state.optimize(&plan).map_err(|e| {
        let message = e.strip_backtrace();
        crate::type_check::coercion_error(&message, query)
            .unwrap_or_else(|| SqlError::Planning { context: "optimizing the query".into(), message })
    })?;
    crate::limits::check_string_calls(&plan, query)?;
    let mut t = crate::translate::Translator {
        state: &state,
        query,
        tables,
        computed: &computed,
        windows: &windows,
        settings,
        sink: &sink.name,
        job,
        stages: vec![],
        shared: crate::share::shared_subplans(&plan),
        planned_once: HashMap::new(),
    };
    let out = t.translate(&plan)?;
    if out.updating && !sink_kind.accepts_updates() {
        return Err(SqlError::invalid(
            sink_name.1,
            format!(
                "INSERT INTO {}: the query produces an updating result (an unwindowed GROUP BY, a regular join or a Top-N changes rows it emitted before), but {} only appends; {}",
                sink.name,
                sink.name,
                sink_kind.update_hint()
            ),
        ));
    }
    let out_schema = Arc::new(plan.schema().as_arrow().clone());
    let sink_schema = table_schema(&sink);
    if out_schema.fields().len() != sink_schema.fields().len() {
        return Err(SqlError::invalid(
            sink_name.1,
            format!(
                "INSERT INTO {}: the query produces {} column(s) ({}) but {} has {} ({})",
                sink.name,
                out_schema.fields().len(),
                names(&out_schema),
                sink.name,
                sink_schema.fields().len(),
                names(&sink_schema)
            ),
        ));
    }
    let mut casts: Vec<Arc<dyn PhysicalExpr>> = vec![];
    for (i, (from, to)) in out_schema.fields().iter().zip(sink_schema.fields()).enumerate() {
        if !crate::type_check::sink_accepts(from.data_type(), to.data_type()) {
            let (want, have) =
                (crate::type_check::sql_type(to.data_type()), crate::type_check::sql_type(from.data_type()));
            return Err(SqlError::invalid(
                sink_name.1,
                format!(
                    "type error: INSERT INTO {}: column {} ({want}) cannot take query column {} ({have}); write \
                     CAST({} AS {want}) in the query, or declare the column {have}",
                    sink.name,
                    to.name(),
                    from.name(),
                    from.name(),
                ),
            ));
        }
        casts.push(Arc::new(datafusion::physical_expr::expressions::Column::new(from.name(), i)));
    }
    t.project(&out, casts, sink_schema, out_schema.fields().len());
    let mut stages = std::mem::take(&mut t.stages);
    crate::share::elide_forwards(&mut stages);
    Ok(InsertPlan { stages, sink, sink_kind, updating: out.updating, logical_plan: plan.display_indent().to_string() })
}

fn names(s: &Schema) -> String {
    s.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

pub(crate) fn physical(state: &SessionState, e: Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    crate::case_lookup::compile(state, e, schema).map_err(planning("compiling an expression"))
}

/// Registers the generated table of a window call; returns its spec, time column and schema.
fn register_window(
    ctx: &SessionContext,
    tables: &HashMap<String, TableDef>,
    views: &HashMap<String, Vec<Tok>>,
    call: &WindowCall,
) -> Result<WindowInfo> {
    let Some(def) = tables.get(&call.table) else {
        return register_view_window(ctx, views, call);
    };
    let col = def.columns.iter().position(|c| c.name == call.time_column).ok_or_else(|| {
        SqlError::invalid(
            call.pos,
            format!("DESCRIPTOR({}): table {} has no such column", call.time_column, call.table),
        )
    })?;
    let proctime = def.columns[col]
        .computed
        .as_deref()
        .is_some_and(|c| c.trim().trim_end_matches("()").trim().eq_ignore_ascii_case("PROCTIME"));
    if !proctime && def.watermark.as_ref().map(|w| &w.column) != Some(&call.time_column) {
        return Err(SqlError::invalid(
            call.pos,
            format!(
                "DESCRIPTOR({}) must name a time attribute: declare `WATERMARK FOR {} AS {} - INTERVAL '1' SECOND` in table {}",
                call.time_column, call.time_column, call.time_column, call.table
            ),
        ));
    }
    let mut fields: Vec<Field> = table_schema(def).fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in ["window_start", "window_end", "window_time"] {
        if fields.iter().any(|f| f.name() == name) {
            return Err(SqlError::invalid(call.pos, format!("table {} already has a column named {name}", call.table)));
        }
        fields.push(ts_field(name));
    }
    let schema = Arc::new(Schema::new(fields));
    let mem = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(planning("registering a window"))?;
    ctx.register_table(call.alias.as_str(), Arc::new(mem)).map_err(planning("registering a window"))?;
    Ok(WindowInfo { call: call.clone(), spec: call.spec, time_col: col, schema, view: None, processing_time: proctime })
}

/// A window over a view: the view's query is planned on its own, and the window's generated
/// table has the view's columns plus the window columns. Whether the DESCRIPTOR column is still
/// a time attribute is checked when the view's plan is translated.
fn register_view_window(
    ctx: &SessionContext,
    views: &HashMap<String, Vec<Tok>>,
    call: &WindowCall,
) -> Result<WindowInfo> {
    let query = views.get(&call.table).ok_or_else(|| {
        SqlError::invalid(
            call.pos,
            format!("window function over {}, which is no table or view created above", call.table),
        )
    })?;
    let inlined = crate::scalar_time::rewrite_time_syntax(&crate::limits::inline_checked(query, views)?)?;
    let sql = script::render(&inlined);
    let state = ctx.state();
    let plan =
        futures::executor::block_on(state.create_logical_plan(&sql)).map_err(|e| crate::error::located(e, query))?;
    crate::limits::check_string_calls(&plan, query)?;
    let plan = state.optimize(&plan).map_err(planning("optimizing a view"))?;
    crate::limits::check_string_calls(&plan, query)?;
    let view_schema = plan.schema().as_arrow().clone();
    let col = view_schema.index_of(&call.time_column).map_err(|_| {
        SqlError::invalid(call.pos, format!("DESCRIPTOR({}): view {} has no such column", call.time_column, call.table))
    })?;
    let mut fields: Vec<Field> = view_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in ["window_start", "window_end", "window_time"] {
        if fields.iter().any(|f| f.name() == name) {
            return Err(SqlError::invalid(call.pos, format!("view {} already has a column named {name}", call.table)));
        }
        fields.push(ts_field(name));
    }
    let schema = Arc::new(Schema::new(fields));
    let mem = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(planning("registering a window"))?;
    ctx.register_table(call.alias.as_str(), Arc::new(mem)).map_err(planning("registering a window"))?;
    Ok(WindowInfo {
        call: call.clone(),
        spec: call.spec,
        time_col: col,
        schema,
        view: Some(Arc::new(plan)),
        processing_time: false,
    })
}

/// A SESSION window aggregate must group by the PARTITION BY columns (sessions are per key).
pub(crate) fn session_keys_check(
    a: &datafusion::logical_expr::Aggregate,
    call: &WindowCall,
    query: &[Tok],
) -> Result<()> {
    for p in &call.partition_by {
        let grouped = a.group_expr.iter().any(|g| matches!(strip_alias(g), Expr::Column(c) if &c.name == p));
        if !grouped {
            return Err(SqlError::invalid(
                script::find_keyword(query, &["GROUP", "BY"]).unwrap_or(call.pos),
                format!("a SESSION window partitioned by {p} must GROUP BY {p} (with window_start and window_end)"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn unsupported_node(node: &LogicalPlan, query: &[Tok]) -> SqlError {
    let (construct, words, alt): (&str, &[&str], Option<&str>) = match node {
        LogicalPlan::Join(_) => ("JOIN", &["JOIN"], None),
        LogicalPlan::Union(_) => ("UNION", &["UNION"], None),
        LogicalPlan::Sort(_) => {
            ("ORDER BY", &["ORDER", "BY"], Some("a streaming result has no order; sort when reading it"))
        }
        LogicalPlan::Limit(_) => ("LIMIT", &["LIMIT"], None),
        LogicalPlan::Window(_) => ("OVER (...) window functions", &["OVER"], None),
        LogicalPlan::Distinct(_) => {
            ("SELECT DISTINCT", &["DISTINCT"], Some("GROUP BY the columns in a window instead"))
        }
        LogicalPlan::Subquery(_) => ("a subquery", &["SELECT"], None),
        LogicalPlan::Unnest(_) => ("UNNEST", &["UNNEST"], None),
        LogicalPlan::Values(_) => ("VALUES", &["VALUES"], None),
        LogicalPlan::EmptyRelation(_) => ("a query without a table", &["SELECT"], None),
        _ => ("this query shape", &["SELECT"], None),
    };
    SqlError::unsupported(script::find_keyword(query, words).unwrap_or_default(), construct, alt)
}

/// `CASE WHEN cond THEN value END`.
fn when(cond: &Expr, value: Expr) -> Expr {
    Expr::Case(datafusion::logical_expr::Case {
        expr: None,
        when_then_expr: vec![(Box::new(cond.clone()), Box::new(value))],
        else_expr: None,
    })
}

/// A window node Keel runs as a window Top-N: one `ROW_NUMBER()` partitioned by (at least)
/// window_start and window_end.
pub(crate) fn is_window_row_number(w: &datafusion::logical_expr::Window) -> bool {
    let [e] = w.window_expr.as_slice() else { return false };
    let Expr::WindowFunction(f) = strip_alias(e) else { return false };
    let names: Vec<&str> = f
        .params
        .partition_by
        .iter()
        .filter_map(|p| if let Expr::Column(c) = strip_alias(p) { Some(c.name.as_str()) } else { None })
        .collect();
    numbering(f.fun.name()).is_some() && names.contains(&"window_start") && names.contains(&"window_end")
}

/// The numbering a window function gives, if Keel runs it as a window Top-N.
pub(crate) fn numbering(name: &str) -> Option<keel_runtime::ops::Numbering> {
    use keel_runtime::ops::Numbering;
    match name.to_ascii_lowercase().as_str() {
        "row_number" => Some(Numbering::RowNumber),
        "rank" => Some(Numbering::Rank),
        "dense_rank" => Some(Numbering::DenseRank),
        _ => None,
    }
}

pub(crate) fn plan_top_n(
    state: &SessionState,
    w: &datafusion::logical_expr::Window,
    query: &[Tok],
) -> Result<Arc<TopNSpec>> {
    let input = w.input.schema();
    let Some(Expr::WindowFunction(f)) = w.window_expr.first().map(strip_alias) else {
        return Err(SqlError::Planning { context: "Top-N".into(), message: "expected ROW_NUMBER()".into() });
    };
    let mut partition_cols = vec![];
    for p in &f.params.partition_by {
        let Expr::Column(c) = strip_alias(p) else {
            return Err(SqlError::unsupported(
                script::find_keyword(query, &["PARTITION"]).unwrap_or_default(),
                "a ROW_NUMBER() partition by an expression",
                Some("partition by columns"),
            ));
        };
        partition_cols.push(input.index_of_column(c).map_err(planning("Top-N partition"))?);
    }
    let window_end = input
        .index_of_column_by_name(None, "window_end")
        .or_else(|| input.columns().iter().position(|c| c.name == "window_end"))
        .ok_or_else(|| SqlError::Planning { context: "Top-N".into(), message: "no window_end column".into() })?;
    let mut order = vec![];
    for s in &f.params.order_by {
        let opts = arrow::compute::SortOptions { descending: !s.asc, nulls_first: s.nulls_first };
        order.push((physical(state, s.expr.clone(), input)?, opts));
    }
    Ok(Arc::new(TopNSpec {
        input_schema: Arc::new(input.as_arrow().clone()),
        partition_cols,
        window_end,
        order,
        numbering: numbering(f.fun.name()).unwrap_or(keel_runtime::ops::Numbering::RowNumber),
        output_schema: Arc::new(w.schema.as_arrow().clone()),
        limit: None,
        late_output: None,
    }))
}

pub(crate) fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// The COUNT(DISTINCT x) calls of `a` (indices among its aggregates) that share their argument
/// and differ only in FILTER, grouped: the runtime keeps one map for each group of two or more.
pub(crate) fn distinct_families(a: &datafusion::logical_expr::Aggregate) -> Vec<Vec<usize>> {
    let mut by_arg: Vec<(Expr, Vec<usize>)> = vec![];
    for (i, e) in a.aggr_expr.iter().enumerate() {
        let Expr::AggregateFunction(f) = strip_alias(e) else { continue };
        if !f.params.distinct || !f.func.name().eq_ignore_ascii_case("count") || f.params.args.len() != 1 {
            continue;
        }
        let arg = f.params.args[0].clone();
        match by_arg.iter_mut().find(|(x, _)| *x == arg) {
            Some((_, calls)) => calls.push(i),
            None => by_arg.push((arg, vec![i])),
        }
    }
    by_arg.into_iter().map(|(_, calls)| calls).filter(|c| c.len() > 1).collect()
}

pub(crate) fn plan_aggregate(
    state: &SessionState,
    a: &datafusion::logical_expr::Aggregate,
    query: &[Tok],
    window: (usize, usize),
) -> Result<AggregatePlan> {
    let mut group_output = vec![];
    let mut nk = 0;
    let input = a.input.schema();
    let is = |c: &datafusion::common::Column, i: usize| input.index_of_column(c).ok() == Some(i);
    for g in &a.group_expr {
        match strip_alias(g) {
            Expr::Column(c) if is(c, window.0) => group_output.push(GroupColumn::WindowStart),
            Expr::Column(c) if is(c, window.1) => group_output.push(GroupColumn::WindowEnd),
            _ => {
                group_output.push(GroupColumn::Key(nk));
                nk += 1;
            }
        }
    }
    let (pre, fields, nk, calls) = aggregate_inputs(state, a, query, Some(window))?;
    Ok(AggregatePlan::new(pre, fields, nk, calls, group_output, Arc::new(a.schema.as_arrow().clone())))
}

/// An aggregate's prepared input: expressions, their fields, the number of keys, the calls.
pub(crate) type AggregateInputs = (Vec<Arc<dyn PhysicalExpr>>, Vec<Field>, usize, Vec<AggregateCall>);

/// The prepared input of an aggregate and its calls: the GROUP BY keys (for a window aggregate,
/// all but the `window` start and end columns, which follow them), then the aggregate arguments.
pub(crate) fn aggregate_inputs(
    state: &SessionState,
    a: &datafusion::logical_expr::Aggregate,
    query: &[Tok],
    window: Option<(usize, usize)>,
) -> Result<AggregateInputs> {
    let input_schema = a.input.schema();
    let windowed = window.is_some();
    let is =
        |c: &datafusion::common::Column, i: Option<usize>| i.is_some() && input_schema.index_of_column(c).ok() == i;
    let mut key_exprs = vec![];
    let mut window_cols = (None, None);
    for g in &a.group_expr {
        match strip_alias(g) {
            Expr::Column(c) if is(c, window.map(|w| w.0)) => window_cols.0 = Some(g.clone()),
            Expr::Column(c) if is(c, window.map(|w| w.1)) => window_cols.1 = Some(g.clone()),
            Expr::GroupingSet(_) => {
                let pos = script::find_keyword(query, &["GROUPING"])
                    .or(script::find_keyword(query, &["ROLLUP"]))
                    .unwrap_or_default();
                return Err(SqlError::unsupported(pos, "GROUPING SETS, ROLLUP and CUBE", None));
            }
            _ => key_exprs.push(g.clone()),
        }
    }
    let mut pre = key_exprs.clone();
    if windowed {
        let (Some(ws), Some(we)) = window_cols else {
            return Err(SqlError::unsupported(
                script::find_keyword(query, &["GROUP", "BY"]).unwrap_or_default(),
                "a window aggregate that does not group by both window_start and window_end",
                Some("add window_start, window_end to the GROUP BY"),
            ));
        };
        pre.push(ws);
        pre.push(we);
    }
    let mut calls = vec![];
    let nk = key_exprs.len();
    for (i, e) in a.aggr_expr.iter().enumerate() {
        let Expr::AggregateFunction(f) = strip_alias(e) else {
            return Err(SqlError::Planning {
                context: "aggregate".into(),
                message: format!("unexpected aggregate expression {e}"),
            });
        };
        let name = f.func.name().to_ascii_lowercase();
        let pos = script::find_keyword(query, &[&name]).unwrap_or_default();
        if f.params.distinct && name != "count" {
            return Err(SqlError::unsupported(
                pos,
                format!("{}(DISTINCT ...)", name.to_uppercase()),
                Some("COUNT(DISTINCT ...) is supported"),
            ));
        }
        let arg = f.params.args.first();
        let literal_arg = matches!(arg, Some(Expr::Literal(v, _)) if !v.is_null());
        let func = match (name.as_str(), literal_arg || arg.is_none()) {
            ("count", _) if f.params.distinct => AggregateFunction::CountDistinct,
            ("count", true) => AggregateFunction::CountStar,
            ("count", false) => AggregateFunction::Count,
            ("sum", _) => AggregateFunction::Sum,
            ("avg", _) => AggregateFunction::Avg,
            ("min", _) => AggregateFunction::Min,
            ("max", _) => AggregateFunction::Max,
            // Any other aggregate (one registered through the API, or one of DataFusion's) runs
            // through its own accumulator.
            _ => AggregateFunction::User,
        };
        if f.params.args.len() > 1 {
            return Err(SqlError::unsupported(pos, format!("{} with several arguments", name.to_uppercase()), None));
        }
        // `agg(x) FILTER (WHERE c)` aggregates `CASE WHEN c THEN x END`: rows failing the filter
        // become NULL, which every aggregate but COUNT(*) skips; COUNT(*) becomes COUNT of that.
        let (func, arg) = match (&f.params.filter, func) {
            (None, _) => (func, arg.cloned()),
            (Some(cond), AggregateFunction::CountStar) => {
                (AggregateFunction::Count, Some(when(cond, datafusion::prelude::lit(1i64))))
            }
            (Some(cond), _) => (func, arg.map(|a| when(cond, a.clone()))),
        };
        let arg_col = match (func, arg) {
            (AggregateFunction::CountStar, _) | (_, None) => None,
            (_, Some(arg)) => {
                pre.push(arg);
                Some(pre.len() - 1)
            }
        };
        let output_type = a.schema.field(a.group_expr.len() + i).data_type().clone();
        let user = if func == AggregateFunction::User {
            let input = match arg_col {
                Some(c) => {
                    Some(pre[c].to_field(input_schema).map_err(planning("aggregate input"))?.1.data_type().clone())
                }
                None => None,
            };
            Some(Arc::new(keel_runtime::ops::UserAggregate {
                udaf: f.func.clone(),
                input,
                output: output_type.clone(),
            }))
        } else {
            None
        };
        calls.push(AggregateCall { func, arg: arg_col, output_type, user });
    }
    let pre_exprs = pre.iter().map(|e| physical(state, e.clone(), input_schema)).collect::<Result<Vec<_>>>()?;
    let window_at = if windowed { Some(nk) } else { None };
    let mut fields = vec![];
    for (i, e) in pre.iter().enumerate() {
        let (_, field) = e.to_field(input_schema).map_err(planning("aggregate input"))?;
        let (t, nullable) = (field.data_type().clone(), field.is_nullable());
        // Column names where the expression is a plain column (they show in dead-lettered late
        // rows), made unique; positions are what the operator relies on.
        let base = match (i, strip_alias(e)) {
            (_, _) if window_at == Some(i) => "window_start".to_string(),
            (_, _) if window_at.map(|w| w + 1) == Some(i) => "window_end".to_string(),
            (_, Expr::Column(c)) => c.name.clone(),
            _ if i < nk => format!("key_{i}"),
            _ => format!("arg_{i}"),
        };
        let mut name = base.clone();
        let mut k = 1;
        while fields.iter().any(|f: &Field| f.name() == &name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        fields.push(Field::new(name, t, nullable));
    }
    Ok((pre_exprs, fields, nk, calls))
}

#[cfg(test)]
mod tests {
    #[test]
    fn computed_columns_take_flink_time_syntax() {
        let sql = "CREATE TABLE t (ts TIMESTAMP(3), h AS FLOOR(ts TO HOUR), later AS TIMESTAMPADD(MINUTE, 5, ts),
              WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
            CREATE TABLE o (h TIMESTAMP(3), later TIMESTAMP(3)) WITH ('connector' = 'blackhole');
            INSERT INTO o SELECT h, later FROM t;";
        let opts = crate::PipelineOptions {
            job: "j".into(),
            data_dir: ".".into(),
            parallelism: 1,
            bounded: true,
            udfs: vec![],
            udafs: vec![],
        };
        let planned = crate::plan(sql, &opts);
        assert!(planned.is_ok(), "{:?}", planned.err().map(|e| e.to_string()));
    }
}
