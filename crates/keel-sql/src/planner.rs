//! Planning a pipeline: tables are registered in a DataFusion session (window TVF calls as
//! tables with the three window columns), the query is planned and optimized by DataFusion, and
//! the resulting logical plan is translated into Keel's streaming operators.
//!
//! Supported plan shapes (anything else is refused with the construct and its position):
//! `scan → (filter | projection)* → [window aggregate → (filter | projection)*] → sink`, where
//! the aggregate groups by `window_start` and `window_end` of a TUMBLE, HOP or CUMULATE window.
//!
//! Invariant: every refusal happens here, before any file is written or task started.

use crate::connectors::{SinkKind, SourcePlan, sink_kind, source_plan};
use crate::error::{Pos, Result, SqlError};
use crate::script::{self, ColumnDef, TableDef, Tok, WindowCall};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemTable;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use keel_runtime::ops::{AggregateCall, AggregateFunction, GroupColumn, TopNSpec, WindowAggregateSpec};
use keel_types::WindowSpec;
use std::collections::HashMap;
use std::sync::Arc;

/// A stateless step planned from the query.
#[derive(Clone)]
pub enum Step {
    Filter(Arc<dyn PhysicalExpr>),
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
}

/// The window aggregate and the projection that prepares its input.
#[derive(Clone)]
pub struct AggregatePlan {
    pub pre_projection: (Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
    pub spec: Arc<WindowAggregateSpec>,
}

impl AggregatePlan {
    /// The aggregate over input prepared by `pre_exprs` (with `pre_fields`): the first `num_keys`
    /// are the keys, then window start and end, then the aggregate arguments.
    pub fn new(
        pre_exprs: Vec<Arc<dyn PhysicalExpr>>,
        pre_fields: Vec<Field>,
        num_keys: usize,
        aggregates: Vec<AggregateCall>,
        group_output: Vec<GroupColumn>,
        output_schema: SchemaRef,
    ) -> Self {
        let pre_schema = Arc::new(Schema::new(pre_fields));
        let spec = WindowAggregateSpec {
            input_schema: pre_schema.clone(),
            num_keys,
            window_start: num_keys,
            window_end: num_keys + 1,
            aggregates,
            group_output,
            output_schema,
            late_output: None,
            merge_sessions: false,
        };
        AggregatePlan { pre_projection: (pre_exprs, pre_schema), spec: Arc::new(spec) }
    }
}

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
                let e = state.create_logical_expr(sql, &df).map_err(bad)?;
                let (_, f) = e.to_field(&df).map_err(bad)?;
                col.data_type = f.data_type().clone();
                exprs.push(state.create_physical_expr(e, &df).map_err(bad)?);
            }
        }
    }
    Ok(Some(Computed { base, exprs, schema: table_schema(def) }))
}

/// One `INSERT INTO` planned down to operators.
#[derive(Clone)]
pub struct InsertPlan {
    pub source: TableDef,
    pub source_plan: SourcePlan,
    pub source_schema: SchemaRef,
    pub window: Option<(WindowSpec, usize, SchemaRef)>,
    pub below: Vec<Step>,
    pub aggregate: Option<AggregatePlan>,
    pub above: Vec<Step>,
    pub sink: TableDef,
    pub sink_kind: SinkKind,
    /// DataFusion's optimized logical plan of the query, for EXPLAIN.
    pub logical_plan: String,
    /// The source's computed columns, added right after decoding.
    pub source_computed: Option<Computed>,
    /// A window Top-N (`ROW_NUMBER() OVER (PARTITION BY window_start, window_end ...)`) after the
    /// steps above, in a stage of its own; then `after_top_n` (usually the `rownum <= N` filter).
    pub top_n: Option<Arc<TopNSpec>>,
    pub after_top_n: Vec<Step>,
}

pub fn table_schema(def: &TableDef) -> SchemaRef {
    Arc::new(Schema::new(
        def.columns.iter().map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable)).collect::<Vec<_>>(),
    ))
}

fn ts_field(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, None), false)
}

fn planning(context: &str) -> impl Fn(datafusion::error::DataFusionError) -> SqlError + '_ {
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
    ctx
}

/// Plans `INSERT INTO sink <query>`.
pub(crate) fn plan_insert(
    tables: &HashMap<String, TableDef>,
    sink_name: (&str, Pos),
    query: &[Tok],
    opts: &crate::PipelineOptions,
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
    let (rewritten, calls) = script::rewrite_window_calls(query)?;
    if calls.len() > 1 {
        return Err(SqlError::unsupported(calls[1].pos, "more than one window function in one query", None));
    }
    let ctx = session();
    for f in &opts.udfs {
        ctx.register_udf(f.clone());
    }
    for (name, def) in tables {
        let mem = MemTable::try_new(table_schema(def), vec![vec![]]).map_err(planning("registering tables"))?;
        ctx.register_table(name.as_str(), Arc::new(mem)).map_err(planning("registering tables"))?;
    }
    let window = match calls.first() {
        Some(call) => Some(register_window(&ctx, tables, call)?),
        None => None,
    };
    let sql = script::render(&rewritten);
    let state = ctx.state();
    let plan = futures::executor::block_on(state.create_logical_plan(&sql)).map_err(|e| located(e, query))?;
    // Refuse what the optimizer might otherwise quietly drop (an ORDER BY, for one).
    let mut refusal = None;
    let _ = plan.apply(|node| {
        if (matches!(
            node,
            LogicalPlan::Sort(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Join(_)
                | LogicalPlan::Union(_)
                | LogicalPlan::Distinct(_)
        ) || matches!(node, LogicalPlan::Window(w) if !is_window_row_number(w)))
            && refusal.is_none()
        {
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
    let plan = state.optimize(&plan).map_err(planning("optimizing the query"))?;
    let chain = linearize(&plan, query)?;
    let LogicalPlan::TableScan(scan) = chain.last().copied().ok_or_else(|| SqlError::Planning {
        context: "planning the query".into(),
        message: "the plan has no table scan".into(),
    })?
    else {
        return Err(SqlError::unsupported(Pos::default(), "a query without a table", None));
    };
    let scan_name = scan.table_name.table().to_string();
    let (source_name, window_info) = match (&window, calls.first()) {
        (Some(w), Some(call)) if scan_name == call.alias => (call.table.clone(), Some(w.clone())),
        _ => (scan_name.clone(), None),
    };
    let source = tables
        .get(&source_name)
        .ok_or_else(|| SqlError::Planning {
            context: "planning".into(),
            message: format!("unknown table {source_name}"),
        })?
        .clone();
    if source_name == sink.name {
        return Err(SqlError::invalid(
            sink_name.1,
            format!("table {} is both read and written by this INSERT", sink.name),
        ));
    }
    let source_plan = source_plan(&source, job)?;
    let source_computed = computed.get(&source_name).cloned();
    let source_schema = table_schema(&source);
    let scan_full_schema = match &window_info {
        Some((_, _, s)) => s.clone(),
        None => source_schema.clone(),
    };

    let mut below = vec![];
    if let Some(proj) = &scan.projection {
        let exprs = proj
            .iter()
            .map(|&i| {
                Arc::new(datafusion::physical_expr::expressions::Column::new(scan_full_schema.field(i).name(), i))
                    as Arc<dyn PhysicalExpr>
            })
            .collect();
        below.push(Step::Project(exprs, Arc::new(scan.projected_schema.as_arrow().clone())));
    }
    if let Some(f) = scan.filters.iter().cloned().reduce(|a, b| a.and(b)) {
        below.push(Step::Filter(physical(&state, f, &scan.projected_schema)?));
    }
    let mut aggregate = None;
    let mut above = vec![];
    let mut top_n = None;
    let mut after_top_n = vec![];
    for node in chain.iter().rev().skip(1) {
        let steps = if top_n.is_some() {
            &mut after_top_n
        } else if aggregate.is_some() {
            &mut above
        } else {
            &mut below
        };
        match node {
            LogicalPlan::Filter(f) => {
                steps.push(Step::Filter(physical(&state, f.predicate.clone(), f.input.schema())?))
            }
            LogicalPlan::Projection(p) => {
                let exprs =
                    p.expr.iter().map(|e| physical(&state, e.clone(), p.input.schema())).collect::<Result<_>>()?;
                steps.push(Step::Project(exprs, Arc::new(p.schema.as_arrow().clone())));
            }
            LogicalPlan::SubqueryAlias(_) => {}
            LogicalPlan::Aggregate(a) => {
                if aggregate.is_some() {
                    return Err(SqlError::unsupported(
                        script::find_keyword(query, &["GROUP", "BY"]).unwrap_or_default(),
                        "an aggregate over the result of another aggregate",
                        None,
                    ));
                }
                if window_info.is_none() {
                    return Err(unwindowed(query));
                }
                let mut plan = plan_aggregate(&state, a, query)?;
                if let Some(call) = calls.first()
                    && let keel_types::WindowSpec::Session { .. } = call.spec
                {
                    session_keys_check(a, call, query)?;
                    let mut spec = plan.spec.as_ref().clone();
                    spec.merge_sessions = true;
                    plan.spec = Arc::new(spec);
                }
                aggregate = Some(plan);
            }
            LogicalPlan::Window(w) if top_n.is_none() && is_window_row_number(w) => {
                top_n = Some(plan_top_n(&state, w, query)?);
            }
            other => return Err(unsupported_node(other, query)),
        }
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
        if !arrow::compute::can_cast_types(from.data_type(), to.data_type()) {
            return Err(SqlError::invalid(
                sink_name.1,
                format!(
                    "INSERT INTO {}: column {} ({}) cannot take query column {} of type {}",
                    sink.name,
                    to.name(),
                    to.data_type(),
                    from.name(),
                    from.data_type()
                ),
            ));
        }
        casts.push(Arc::new(datafusion::physical_expr::expressions::Column::new(from.name(), i)));
    }
    if top_n.is_some() {
        after_top_n.push(Step::Project(casts, sink_schema));
    } else {
        above.push(Step::Project(casts, sink_schema));
        if aggregate.is_none() {
            below.append(&mut above);
        }
    }
    let logical_plan = plan.display_indent().to_string();
    Ok(InsertPlan {
        source,
        source_plan,
        source_schema,
        window: window_info,
        below,
        aggregate,
        above,
        sink,
        sink_kind,
        logical_plan,
        source_computed,
        top_n,
        after_top_n,
    })
}

/// A DataFusion planning error, placed at the name it complains about when there is one.
fn located(e: datafusion::error::DataFusionError, query: &[Tok]) -> SqlError {
    let message = e.strip_backtrace();
    let name = ["No field named ", "table '", "Invalid function '"].iter().find_map(|marker| {
        let rest = &message[message.find(marker)? + marker.len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(rest.len());
        Some(rest[..end].trim_matches('.').rsplit('.').next().unwrap_or("").to_string())
    });
    match name.filter(|n| !n.is_empty()).and_then(|n| script::find_keyword(query, &[n.as_str()]).map(|p| (n, p))) {
        Some((_, pos)) => SqlError::Invalid { pos, message },
        None => SqlError::Planning { context: "planning the query".into(), message },
    }
}

fn names(s: &Schema) -> String {
    s.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

fn physical(state: &SessionState, e: Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    state.create_physical_expr(e, schema).map_err(planning("compiling an expression"))
}

/// Registers the generated table of a window call; returns its spec, time column and schema.
fn register_window(
    ctx: &SessionContext,
    tables: &HashMap<String, TableDef>,
    call: &WindowCall,
) -> Result<(WindowSpec, usize, SchemaRef)> {
    let def = tables.get(&call.table).ok_or_else(|| {
        SqlError::invalid(
            call.pos,
            format!(
                "window function over {}, which is not a table created above (a window over a view is not supported yet: apply it to the table the view reads)",
                call.table
            ),
        )
    })?;
    let col = def.columns.iter().position(|c| c.name == call.time_column).ok_or_else(|| {
        SqlError::invalid(
            call.pos,
            format!("DESCRIPTOR({}): table {} has no such column", call.time_column, call.table),
        )
    })?;
    if def.watermark.as_ref().map(|w| &w.column) != Some(&call.time_column) {
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
    Ok((call.spec, col, schema))
}

/// The plan's nodes from the top down to its one table scan.
fn linearize<'a>(plan: &'a LogicalPlan, query: &[Tok]) -> Result<Vec<&'a LogicalPlan>> {
    let mut out = vec![];
    let mut node = plan;
    loop {
        out.push(node);
        let inputs = node.inputs();
        match inputs.len() {
            0 => return Ok(out),
            1 => node = inputs[0],
            _ => return Err(unsupported_node(node, query)),
        }
    }
}

/// A SESSION window aggregate must group by the PARTITION BY columns (sessions are per key).
fn session_keys_check(a: &datafusion::logical_expr::Aggregate, call: &WindowCall, query: &[Tok]) -> Result<()> {
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

fn unwindowed(query: &[Tok]) -> SqlError {
    SqlError::unsupported(
        script::find_keyword(query, &["GROUP", "BY"]).unwrap_or_default(),
        "GROUP BY without a window (it produces an updating result)",
        Some("group by window_start and window_end of TABLE(TUMBLE(...)), HOP or CUMULATE"),
    )
}

fn unsupported_node(node: &LogicalPlan, query: &[Tok]) -> SqlError {
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
fn is_window_row_number(w: &datafusion::logical_expr::Window) -> bool {
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
fn numbering(name: &str) -> Option<keel_runtime::ops::Numbering> {
    use keel_runtime::ops::Numbering;
    match name.to_ascii_lowercase().as_str() {
        "row_number" => Some(Numbering::RowNumber),
        "rank" => Some(Numbering::Rank),
        "dense_rank" => Some(Numbering::DenseRank),
        _ => None,
    }
}

fn plan_top_n(state: &SessionState, w: &datafusion::logical_expr::Window, query: &[Tok]) -> Result<Arc<TopNSpec>> {
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
    }))
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

fn plan_aggregate(
    state: &SessionState,
    a: &datafusion::logical_expr::Aggregate,
    query: &[Tok],
) -> Result<AggregatePlan> {
    let input_schema = a.input.schema();
    let mut key_exprs = vec![];
    let mut group_output = vec![];
    let mut window_cols = (None, None);
    for g in &a.group_expr {
        match strip_alias(g) {
            Expr::Column(c) if c.name == "window_start" => {
                window_cols.0 = Some(g.clone());
                group_output.push(GroupColumn::WindowStart);
            }
            Expr::Column(c) if c.name == "window_end" => {
                window_cols.1 = Some(g.clone());
                group_output.push(GroupColumn::WindowEnd);
            }
            Expr::GroupingSet(_) => {
                let pos = script::find_keyword(query, &["GROUPING"])
                    .or(script::find_keyword(query, &["ROLLUP"]))
                    .unwrap_or_default();
                return Err(SqlError::unsupported(pos, "GROUPING SETS, ROLLUP and CUBE", None));
            }
            _ => {
                group_output.push(GroupColumn::Key(key_exprs.len()));
                key_exprs.push(g.clone());
            }
        }
    }
    let (Some(ws), Some(we)) = window_cols else {
        return Err(SqlError::unsupported(
            script::find_keyword(query, &["GROUP", "BY"]).unwrap_or_default(),
            "a window aggregate that does not group by both window_start and window_end",
            Some("add window_start, window_end to the GROUP BY"),
        ));
    };
    let mut pre = key_exprs.clone();
    pre.push(ws);
    pre.push(we);
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
            (other, _) => {
                return Err(SqlError::unsupported(
                    pos,
                    format!("aggregate function {}", other.to_uppercase()),
                    Some("use COUNT, SUM, AVG, MIN or MAX"),
                ));
            }
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
        calls.push(AggregateCall { func, arg: arg_col, output_type });
    }
    let pre_exprs = pre.iter().map(|e| physical(state, e.clone(), input_schema)).collect::<Result<Vec<_>>>()?;
    let mut fields = vec![];
    for (i, e) in pre.iter().enumerate() {
        let (_, field) = e.to_field(input_schema).map_err(planning("aggregate input"))?;
        let (t, nullable) = (field.data_type().clone(), field.is_nullable());
        // Column names where the expression is a plain column (they show in dead-lettered late
        // rows), made unique; positions are what the operator relies on.
        let base = match (i, strip_alias(e)) {
            (_, _) if i == nk => "window_start".to_string(),
            (_, _) if i == nk + 1 => "window_end".to_string(),
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
    Ok(AggregatePlan::new(pre_exprs, fields, nk, calls, group_output, Arc::new(a.schema.as_arrow().clone())))
}
