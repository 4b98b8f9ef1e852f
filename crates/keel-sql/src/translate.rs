//! Translating DataFusion's optimized logical plan of one query into planned stages, bottom up:
//! each table scan starts a source stage; filters and projections join the current stage; an
//! aggregate, a Top-N, an OVER aggregation or a join starts a new stage behind a hash exchange on
//! its keys. Every stream knows whether it is a changelog (`updating`) and which of its columns
//! still carry event time (`rowtime`, `window_end`), which decides what may follow it.
//!
//! A subtree the query uses more than once is planned once (see `share`).
//!
//! Invariants: operators planned over a changelog keep its `_op` column last (projections carry
//! it); constructs that cannot take a changelog (window aggregates, window Top-N, OVER) refuse it
//! here, before anything runs; every refusal names the construct and its position.

use crate::error::{Pos, Result, SqlError};
use crate::plan::{AggregatePlan, PlannedInput, PlannedOp, PlannedStage, SourceNode, Step};
use crate::planner::{
    Computed, Settings, WindowInfo, physical, plan_aggregate, planning, strip_alias, table_schema, unsupported_node,
};
use crate::script::{self, TableDef, Tok};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, JoinType as DfJoinType, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use keel_runtime::changelog::{op_field, with_op_field};
use keel_runtime::ops::{GroupAggregateSpec, JoinSide, JoinSpec, JoinType, RankSpec};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A stream under construction: the stage producing it and what its rows are.
#[derive(Clone, Debug)]
pub(crate) struct Stream {
    pub stage: usize,
    pub updating: bool,
    /// The column holding the event time (a time attribute) if any.
    pub rowtime: Option<usize>,
    /// The window_start and window_end columns of a window TVF (or of a window aggregate), while
    /// they are still plain columns (renaming keeps them).
    pub window_start: Option<usize>,
    pub window_end: Option<usize>,
    /// The window call this stream's rows were assigned by (for SESSION checks, late rows).
    pub window: Option<String>,
    /// The column holding `PROCTIME()` (a processing-time attribute), if any.
    pub proctime: Option<usize>,
    /// The window columns come from a processing-time window.
    pub processing_time: bool,
    /// The columns, in order, whose values decide which subtask of `stage` holds a row (the keys
    /// its input was exchanged by), while they are still plain columns: a keyed operator over
    /// exactly these columns can join `stage` instead of starting one behind another exchange.
    /// The key group of a row is the same either way, so its state is placed the same.
    pub partitioned: Option<Vec<usize>>,
    /// The table whose rows (filtered, projected, assigned to windows) this stream still is, for
    /// its options about them ('late-records').
    pub table: Option<String>,
}

pub(crate) struct Translator<'a> {
    pub state: &'a SessionState,
    pub query: &'a [Tok],
    pub tables: &'a HashMap<String, TableDef>,
    pub computed: &'a HashMap<String, Computed>,
    pub windows: &'a HashMap<String, WindowInfo>,
    pub settings: &'a Settings,
    pub sink: &'a str,
    pub job: &'a str,
    pub stages: Vec<PlannedStage>,
    /// Subtrees the query uses more than once (`share::shared_subplans`), and the streams of
    /// those already planned.
    pub shared: HashSet<LogicalPlan>,
    pub planned_once: HashMap<LogicalPlan, Stream>,
}

fn col(name: &str, i: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(name, i))
}

fn arrow_schema(s: &DFSchema) -> SchemaRef {
    Arc::new(s.as_arrow().clone())
}

impl Stream {
    /// A changelog produced by a new stage: no time attribute or window column survives it.
    fn changelog(stage: usize) -> Stream {
        Stream {
            stage,
            updating: true,
            rowtime: None,
            window_start: None,
            window_end: None,
            window: None,
            proctime: None,
            processing_time: false,
            partitioned: None,
            table: None,
        }
    }
}

impl Translator<'_> {
    fn push(&mut self, s: &Stream, op: PlannedOp) {
        self.stages[s.stage].ops.push(op);
    }

    fn new_stage(&mut self, input: PlannedInput, op: PlannedOp) -> usize {
        self.stages.push(PlannedStage { input, ops: vec![op] });
        self.stages.len() - 1
    }

    /// A projection of `exprs` (typed by `schema`) that keeps `_op` last on a changelog.
    pub(crate) fn project(
        &mut self,
        s: &Stream,
        mut exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
        input_cols: usize,
    ) {
        let schema = if s.updating {
            exprs.push(col(keel_runtime::changelog::OP_COLUMN, input_cols));
            with_op_field(&schema)
        } else {
            schema
        };
        self.push(s, PlannedOp::Step(Step::Project(exprs, schema)));
    }

    fn pos(&self, words: &[&str]) -> Pos {
        script::find_keyword(self.query, words).unwrap_or_default()
    }

    pub(crate) fn translate(&mut self, node: &LogicalPlan) -> Result<Stream> {
        if !self.shared.contains(node) {
            return self.translate_node(node);
        }
        let s = match self.planned_once.get(node) {
            Some(s) => s.clone(),
            None => {
                let s = self.translate_node(node)?;
                self.planned_once.insert(node.clone(), s.clone());
                s
            }
        };
        // Each consumer continues in a stage of its own (empty ones are removed at the end).
        let stage = self.stages.len();
        self.stages.push(PlannedStage { input: PlannedInput::Forward { from: s.stage }, ops: vec![] });
        Ok(Stream { stage, ..s })
    }

    fn translate_node(&mut self, node: &LogicalPlan) -> Result<Stream> {
        match node {
            LogicalPlan::TableScan(scan) => self.scan(scan),
            LogicalPlan::SubqueryAlias(a) => self.translate(&a.input),
            LogicalPlan::Filter(f) => {
                if let Some(s) = self.top_n(f)? {
                    return Ok(s);
                }
                let s = self.translate(&f.input)?;
                self.push_down_filter(&s, f);
                let p = physical(self.state, f.predicate.clone(), f.input.schema())?;
                self.push(&s, PlannedOp::Step(Step::Filter(p)));
                Ok(s)
            }
            LogicalPlan::Projection(p) => {
                if let Some(plan) = crate::cse::hoist_shared(p)? {
                    return self.translate(&plan);
                }
                let mut s = self.translate(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| physical(self.state, e.clone(), p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                let input = p.input.schema();
                let moved = |c: Option<usize>| {
                    let c = c?;
                    p.expr.iter().position(
                        |e| matches!(strip_alias(e), Expr::Column(x) if input.index_of_column(x).ok() == Some(c)),
                    )
                };
                s.rowtime = moved(s.rowtime);
                s.window_start = moved(s.window_start);
                s.window_end = moved(s.window_end);
                s.proctime = p.expr.iter().position(crate::planner::is_proctime).or(moved(s.proctime));
                s.partitioned = s.partitioned.and_then(|cols| cols.iter().map(|&c| moved(Some(c))).collect());
                self.project(&s, exprs, arrow_schema(&p.schema), input.fields().len());
                Ok(s)
            }
            LogicalPlan::Aggregate(a) => self.aggregate(a),
            LogicalPlan::Window(w) if crate::planner::is_window_row_number(w) => {
                let s = self.translate(&w.input)?;
                if s.updating {
                    return Err(SqlError::unsupported(
                        self.pos(&["OVER"]),
                        "a window Top-N over an updating input",
                        None,
                    ));
                }
                let spec = crate::planner::plan_top_n(self.state, w, self.query)?;
                let keys = spec.partition_cols.clone();
                let late_table = s.table.as_ref().and_then(|t| self.tables.get(t)).cloned().map(Box::new);
                let stage = self
                    .new_stage(PlannedInput::Exchange { from: s.stage, keys }, PlannedOp::WindowTopN(spec, late_table));
                Ok(Stream { stage, updating: false, rowtime: None, partitioned: None, table: None, ..s })
            }
            LogicalPlan::Window(w) => crate::over::plan_over(self, w),
            LogicalPlan::Join(j) => self.join(j),
            other => Err(unsupported_node(other, self.query)),
        }
    }

    /// Tells a source stage that `f`, directly over its table scan, keeps only some of its rows
    /// (see `pushdown`). The filter itself is still planned after this.
    fn push_down_filter(&mut self, s: &Stream, f: &datafusion::logical_expr::Filter) {
        // Down through aliases and projections that pass `event_type` through unchanged.
        let mut input = f.input.as_ref();
        loop {
            input = match input {
                LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
                LogicalPlan::Projection(p) if crate::pushdown::passes_event_type(&p.expr) => p.input.as_ref(),
                _ => break,
            };
        }
        let LogicalPlan::TableScan(scan) = input else { return };
        if self.windows.contains_key(scan.table_name.table()) {
            return;
        }
        let stage = &mut self.stages[s.stage];
        // Only the scan's own projection may stand between the source and this filter.
        if !stage.ops.iter().all(|op| matches!(op, PlannedOp::Step(Step::Project(..)))) {
            return;
        }
        if let PlannedInput::Source(node) = &mut stage.input
            && let crate::connectors::SourcePlan::Nexmark(cfg) = &mut node.plan
            && let Some(kinds) = crate::pushdown::nexmark_event_types(&f.predicate)
        {
            cfg.event_types = Some(kinds);
        }
    }

    fn scan(&mut self, scan: &datafusion::logical_expr::TableScan) -> Result<Stream> {
        let name = scan.table_name.table().to_string();
        let window = self.windows.get(&name).cloned();
        let (mut s, full) = match &window {
            Some(w) if w.view.is_some() => {
                let view = w.view.clone().unwrap_or_else(|| unreachable!("checked by the match guard"));
                let s = self.translate(&view)?;
                if s.updating {
                    return Err(SqlError::unsupported(
                        w.call.pos,
                        format!("a window over view {}, whose rows are updated", w.call.table),
                        None,
                    ));
                }
                let processing_time = s.proctime == Some(w.time_col);
                if s.rowtime != Some(w.time_col) && !processing_time {
                    return Err(SqlError::invalid(
                        w.call.pos,
                        format!(
                            "DESCRIPTOR({}) must name a time attribute of view {}: select the column the table's WATERMARK is declared on, unchanged",
                            w.call.time_column, w.call.table
                        ),
                    ));
                }
                self.push(&s, PlannedOp::WindowAssign(w.spec, w.time_col, w.schema.clone()));
                let n = view.schema().fields().len();
                let s = Stream {
                    window_start: Some(n),
                    window_end: Some(n + 1),
                    window: Some(w.call.alias.clone()),
                    processing_time,
                    // The scan's projection below moves the view's columns.
                    partitioned: None,
                    ..s
                };
                (s, w.schema.clone())
            }
            _ => self.table_source(&name, window.as_ref())?,
        };
        if let Some(proj) = &scan.projection {
            let narrowed = if window.is_some() { self.narrow_window_input(&s, proj) } else { None };
            let exprs = proj
                .iter()
                .map(|&i| col(full.field(i).name(), narrowed.as_ref().map_or(i, |m: &Vec<usize>| m[i])))
                .collect();
            self.project(&s, exprs, arrow_schema(&scan.projected_schema), full.fields().len());
            let moved = |c: Option<usize>| c.and_then(|r| proj.iter().position(|&i| i == r));
            s.rowtime = moved(s.rowtime);
            s.proctime = moved(s.proctime);
            s.window_start = moved(s.window_start);
            s.window_end = moved(s.window_end);
        }
        if let Some(f) = scan.filters.iter().cloned().reduce(|a, b| a.and(b)) {
            let p = physical(self.state, f, &scan.projected_schema)?;
            self.push(&s, PlannedOp::Step(Step::Filter(p)));
        }
        Ok(s)
    }

    /// When a window assigner ends the stage and the query reads only some of its input columns
    /// (`proj`, indices into the assigner's output), projects its input to those columns (and the
    /// time column) first, so that HOP and CUMULATE do not copy unread columns once per window.
    /// Returns where each of the assigner's former output columns now is (unread ones map to 0
    /// and are never referenced).
    fn narrow_window_input(&mut self, s: &Stream, proj: &[usize]) -> Option<Vec<usize>> {
        let ops = &mut self.stages[s.stage].ops;
        let Some(PlannedOp::WindowAssign(spec, time_col, schema)) = ops.last().cloned() else { return None };
        let n_in = schema.fields().len().checked_sub(3)?;
        let mut needed: Vec<usize> = proj.iter().copied().filter(|&i| i < n_in).chain([time_col]).collect();
        needed.sort_unstable();
        needed.dedup();
        if needed.len() == n_in {
            return None;
        }
        let fields: Vec<_> = needed.iter().map(|&i| schema.field(i).clone()).collect();
        let exprs = needed.iter().map(|&i| col(schema.field(i).name(), i)).collect();
        let narrow_in = Arc::new(Schema::new(fields.clone()));
        let narrow_out = Arc::new(Schema::new(
            fields.into_iter().chain(schema.fields()[n_in..].iter().map(|f| f.as_ref().clone())).collect::<Vec<_>>(),
        ));
        let new_time = needed.iter().position(|&i| i == time_col)?;
        ops.pop();
        ops.push(PlannedOp::Step(Step::Project(exprs, narrow_in)));
        ops.push(PlannedOp::WindowAssign(spec, new_time, narrow_out));
        let mut map = vec![0; schema.fields().len()];
        for (to, &from) in needed.iter().enumerate() {
            map[from] = to;
        }
        for k in 0..3 {
            map[n_in + k] = needed.len() + k;
        }
        Some(map)
    }

    /// A source stage reading table `name` (or the table a window call reads), with the window
    /// assigner when there is a window; returns the stream and its full schema.
    fn table_source(&mut self, name: &str, window: Option<&WindowInfo>) -> Result<(Stream, SchemaRef)> {
        let table_name = window.map(|w| w.call.table.clone()).unwrap_or(name.to_string());
        let table = self.tables.get(&table_name).cloned().ok_or_else(|| SqlError::Planning {
            context: "planning".into(),
            message: format!("unknown table {table_name}"),
        })?;
        if table.name == self.sink {
            return Err(SqlError::invalid(
                table.pos,
                format!("table {} is both read and written by this INSERT", table.name),
            ));
        }
        let plan = crate::connectors::source_plan(&table, self.job)?;
        let schema = table_schema(&table);
        let node = SourceNode {
            table: table.clone(),
            plan,
            schema: schema.clone(),
            computed: self.computed.get(&table_name).cloned(),
        };
        let mut ops = vec![];
        let full = match window {
            Some(w) => {
                ops.push(PlannedOp::WindowAssign(w.spec, w.time_col, w.schema.clone()));
                w.schema.clone()
            }
            None => schema.clone(),
        };
        self.stages.push(PlannedStage { input: PlannedInput::Source(Box::new(node)), ops });
        let rowtime = table.watermark.as_ref().and_then(|wm| table.columns.iter().position(|c| c.name == wm.column));
        let n = schema.fields().len();
        let proctime = table.columns.iter().position(|c| {
            c.computed
                .as_deref()
                .is_some_and(|t| t.trim().trim_end_matches("()").trim().eq_ignore_ascii_case("PROCTIME"))
        });
        let s = Stream {
            stage: self.stages.len() - 1,
            updating: false,
            rowtime,
            window_start: window.map(|_| n),
            window_end: window.map(|_| n + 1),
            window: window.map(|w| w.call.alias.clone()),
            proctime,
            processing_time: window.is_some_and(|w| w.processing_time),
            partitioned: None,
            table: Some(table_name.clone()),
        };
        Ok((s, full))
    }

    fn aggregate(&mut self, a: &datafusion::logical_expr::Aggregate) -> Result<Stream> {
        let s = self.translate(&a.input)?;
        let input = a.input.schema();
        let grouped = |i: Option<usize>| {
            i.is_some()
                && a.group_expr
                    .iter()
                    .any(|g| matches!(strip_alias(g), Expr::Column(c) if input.index_of_column(c).ok() == i))
        };
        let window_cols = s.window_start.zip(s.window_end).filter(|(ws, we)| grouped(Some(*ws)) && grouped(Some(*we)));
        if let Some(window_cols) = window_cols {
            if s.updating {
                return Err(SqlError::unsupported(
                    self.pos(&["GROUP", "BY"]),
                    "a window aggregate over an updating input",
                    None,
                ));
            }
            let mut plan: AggregatePlan = plan_aggregate(self.state, a, self.query, window_cols)?;
            let info = s.window.as_ref().and_then(|w| self.windows.get(w)).cloned();
            if s.processing_time {
                let Some(info @ WindowInfo { spec: keel_types::WindowSpec::Tumble { .. }, .. }) = &info else {
                    return Err(SqlError::unsupported(
                        self.pos(&["GROUP", "BY"]),
                        "a processing-time window other than TUMBLE directly over the table",
                        Some("use TUMBLE over the PROCTIME() column"),
                    ));
                };
                let mut spec = plan.spec.as_ref().clone();
                spec.processing_time = Some(info.spec);
                plan.spec = Arc::new(spec);
            }
            if let Some(info) = &info
                && let keel_types::WindowSpec::Session { .. } = info.spec
            {
                crate::planner::session_keys_check(a, &info.call, self.query)?;
                let mut spec = plan.spec.as_ref().clone();
                spec.merge_sessions = true;
                plan.spec = Arc::new(spec);
            }
            if !s.processing_time
                && let Some(hop) =
                    crate::slicing::slice_hop(&mut self.stages[s.stage].ops, &plan.pre_projection.0, plan.spec.num_keys)
            {
                let mut spec = plan.spec.as_ref().clone();
                spec.hop_slices = Some(hop);
                plan.spec = Arc::new(spec);
            }
            let (exprs, schema) = plan.pre_projection.clone();
            self.push(&s, PlannedOp::Step(Step::Project(exprs, schema)));
            let keys = (0..plan.spec.num_keys).collect();
            let late_table = info.and_then(|i| self.tables.get(&i.call.table).cloned());
            let at = |k: fn(&keel_runtime::ops::GroupColumn) -> bool| plan.spec.group_output.iter().position(k);
            let window_start = at(|g| matches!(g, keel_runtime::ops::GroupColumn::WindowStart));
            let window_end = at(|g| matches!(g, keel_runtime::ops::GroupColumn::WindowEnd));
            let stage = self.new_stage(
                PlannedInput::Exchange { from: s.stage, keys },
                PlannedOp::WindowAggregate { spec: plan.spec.clone(), late_table },
            );
            return Ok(Stream {
                stage,
                updating: false,
                rowtime: None,
                window_start,
                window_end,
                window: None,
                proctime: None,
                processing_time: false,
                partitioned: None,
                table: None,
            });
        }
        // An unwindowed GROUP BY: an updating result.
        let (pre, fields, nk, calls) = crate::planner::aggregate_inputs(self.state, a, self.query, None)?;
        let pre_schema = Arc::new(Schema::new(fields));
        self.project(&s, pre, pre_schema.clone(), a.input.schema().fields().len());
        let spec = GroupAggregateSpec {
            input_schema: pre_schema,
            input_updating: s.updating,
            num_keys: nk,
            aggregates: calls,
            output_schema: with_op_field(a.schema.as_arrow()),
            state_ttl: self.settings.state_ttl,
            distinct_families: crate::planner::distinct_families(a),
        };
        let stage = self.new_stage(
            PlannedInput::Exchange { from: s.stage, keys: (0..nk).collect() },
            PlannedOp::GroupAggregate(Arc::new(spec)),
        );
        Ok(Stream::changelog(stage))
    }

    /// `WHERE rn <= N` over `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)` (not per window):
    /// a streaming Top-N (deduplication when N = 1).
    fn top_n(&mut self, f: &datafusion::logical_expr::Filter) -> Result<Option<Stream>> {
        use datafusion::logical_expr::Operator as Op;
        let Expr::BinaryExpr(b) = &f.predicate else { return Ok(None) };
        let (name, op, lit) = match (b.left.as_ref(), b.right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c.name.clone(), b.op, v.clone()),
            (Expr::Literal(v, _), Expr::Column(c)) => {
                let flipped = match b.op {
                    Op::GtEq => Op::LtEq,
                    Op::Gt => Op::Lt,
                    other => other,
                };
                (c.name.clone(), flipped, v.clone())
            }
            _ => return Ok(None),
        };
        let Ok(n) = i64::try_from(lit.clone())
            .or_else(|_| lit.cast_to(&arrow::datatypes::DataType::Int64).and_then(i64::try_from))
        else {
            return Ok(None);
        };
        let limit = match op {
            Op::LtEq => n,
            Op::Lt => n - 1,
            Op::Eq if n == 1 => 1,
            _ => return Ok(None),
        };
        // Down through aliases and column-only projections to the window node.
        let mut chain = vec![];
        let mut node = f.input.as_ref();
        let mut name = name;
        let w =
            loop {
                match node {
                    LogicalPlan::SubqueryAlias(a) => {
                        chain.push(node);
                        node = a.input.as_ref();
                    }
                    LogicalPlan::Projection(p) => {
                        let Some(e) = p.expr.iter().find(|e| {
                            e.schema_name().to_string() == name || matches!(e, Expr::Alias(a) if a.name == name)
                        }) else {
                            return Ok(None);
                        };
                        let Expr::Column(c) = strip_alias(e) else { return Ok(None) };
                        name = c.name.clone();
                        chain.push(node);
                        node = p.input.as_ref();
                    }
                    LogicalPlan::Window(w) => break w,
                    _ => return Ok(None),
                }
            };
        if crate::planner::is_window_row_number(w) {
            // A window Top-N: translated as usual, and told the limit so that it can drop rows
            // that can no longer make it while a window is open.
            let s = self.translate(&f.input)?;
            if let Some(PlannedOp::WindowTopN(spec, _)) = self.stages[s.stage].ops.first_mut()
                && w.schema.field(w.schema.fields().len() - 1).name() == &name
                && limit >= 1
            {
                let mut limited = spec.as_ref().clone();
                limited.limit = Some(limit as u64);
                *spec = Arc::new(limited);
            }
            let p = physical(self.state, f.predicate.clone(), f.input.schema())?;
            self.push(&s, PlannedOp::Step(Step::Filter(p)));
            return Ok(Some(s));
        }
        if w.window_expr.len() != 1 {
            return Ok(None);
        }
        let Some(Expr::WindowFunction(wf)) = w.window_expr.first().map(strip_alias) else { return Ok(None) };
        let Some(numbering) = crate::planner::numbering(wf.fun.name()) else { return Ok(None) };
        if w.schema.field(w.schema.fields().len() - 1).name() != &name {
            return Ok(None);
        }
        if limit < 1 {
            return Err(SqlError::invalid(self.pos(&["WHERE"]), "a Top-N filter that keeps no row (rownum < 1)"));
        }
        let s = self.translate(&w.input)?;
        let input = w.input.schema();
        let mut partition_cols = vec![];
        for p in &wf.params.partition_by {
            let Expr::Column(c) = strip_alias(p) else {
                return Err(SqlError::unsupported(
                    self.pos(&["PARTITION"]),
                    "a ROW_NUMBER() partition by an expression",
                    Some("partition by columns"),
                ));
            };
            partition_cols.push(input.index_of_column(c).map_err(planning("Top-N partition"))?);
        }
        if wf.params.order_by.is_empty() {
            return Err(SqlError::invalid(self.pos(&["OVER"]), "ROW_NUMBER() needs an ORDER BY in its OVER clause"));
        }
        let mut order = vec![];
        for o in &wf.params.order_by {
            let opts = arrow::compute::SortOptions { descending: !o.asc, nulls_first: o.nulls_first };
            order.push((physical(self.state, o.expr.clone(), input)?, opts));
        }
        // Deduplication on event time keeping the last row: a newer row wins a tie.
        let later_wins_ties = limit == 1
            && wf.params.order_by.len() == 1
            && !wf.params.order_by[0].asc
            && matches!(&wf.params.order_by[0].expr, Expr::Column(c) if input.index_of_column(c).ok() == s.rowtime);
        let spec = RankSpec {
            input_schema: arrow_schema(input),
            input_updating: s.updating,
            partition_cols: partition_cols.clone(),
            order,
            limit: limit as usize,
            numbering,
            emit_number: true,
            later_wins_ties,
            state_ttl: self.settings.state_ttl,
            output_schema: with_op_field(w.schema.as_arrow()),
        };
        // Rows already partitioned by these columns (a join on them: q9) are ranked in their stage.
        let op = PlannedOp::Rank(Arc::new(spec));
        let stage = if s.partitioned.as_ref() == Some(&partition_cols) {
            self.push(&s, op);
            s.stage
        } else {
            self.new_stage(PlannedInput::Exchange { from: s.stage, keys: partition_cols }, op)
        };
        let mut out = Stream::changelog(stage);
        for n in chain.into_iter().rev() {
            if let LogicalPlan::Projection(p) = n {
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| physical(self.state, e.clone(), p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                self.project(&out, exprs, arrow_schema(&p.schema), p.input.schema().fields().len());
            }
        }
        out.updating = true;
        Ok(Some(out))
    }

    fn join(&mut self, j: &datafusion::logical_expr::Join) -> Result<Stream> {
        let join_type = match j.join_type {
            DfJoinType::Inner => JoinType::Inner,
            DfJoinType::Left => JoinType::Left,
            DfJoinType::Right => JoinType::Right,
            DfJoinType::Full => JoinType::Full,
            DfJoinType::LeftSemi => JoinType::LeftSemi,
            DfJoinType::LeftAnti => JoinType::LeftAnti,
            DfJoinType::RightSemi => JoinType::RightSemi,
            DfJoinType::RightAnti => JoinType::RightAnti,
            other => {
                return Err(SqlError::unsupported(
                    self.pos(&["JOIN"]),
                    format!("{other} joins (semi and anti joins, IN and EXISTS subqueries)"),
                    Some("use an inner or outer join"),
                ));
            }
        };
        if j.null_aware || j.null_equality != datafusion::common::NullEquality::NullEqualsNothing {
            return Err(SqlError::unsupported(
                self.pos(&["NOT", "IN"]),
                "NOT IN over a subquery (a join where NULL keys match)",
                Some("write NOT EXISTS (SELECT ... WHERE a.key = b.key)"),
            ));
        }
        let l = self.translate(&j.left)?;
        let r = self.translate(&j.right)?;
        let (ls, rs) = (j.left.schema(), j.right.schema());
        let (nl, nr) = (ls.fields().len(), rs.fields().len());
        // Keys that are expressions (or casts) are computed into extra columns after each side's
        // own columns, and projected away after the join.
        let mut lkeys = vec![];
        let mut rkeys = vec![];
        let (mut lextra, mut rextra) = (vec![], vec![]);
        for (a, b) in &j.on {
            for (e, schema, keys, extra, n) in
                [(a, ls, &mut lkeys, &mut lextra, nl), (b, rs, &mut rkeys, &mut rextra, nr)]
            {
                match strip_alias(e) {
                    Expr::Column(c) => keys.push(schema.index_of_column(c).map_err(planning("join keys"))?),
                    other => {
                        extra.push(other.clone());
                        keys.push(n + extra.len() - 1);
                    }
                }
            }
        }
        let left_schema = self.key_columns(&l, ls, &lextra)?;
        let right_schema = self.key_columns(&r, rs, &rextra)?;
        if lkeys.is_empty() {
            return Err(SqlError::unsupported(
                self.pos(&["JOIN"]),
                "a join without an equality between the two sides",
                Some("add an equality condition (a.key = b.key) to the ON clause"),
            ));
        }
        // The condition sees both sides' columns, whatever the join outputs (semi joins: one side).
        let both = ls.as_ref().clone().join(rs).map_err(planning("join schema"))?;
        let filter = match &j.filter {
            Some(f) => Some(shift_right_columns(physical(self.state, f.clone(), &both)?, nl, lextra.len())?),
            None => None,
        };
        let mut left =
            JoinSide { schema: left_schema.clone(), updating: l.updating, keys: lkeys.clone(), expiry: None };
        let mut right =
            JoinSide { schema: right_schema.clone(), updating: r.updating, keys: rkeys.clone(), expiry: None };
        // Inner and semi joins of append-only inputs never retract what they emitted.
        let append_inner = matches!(join_type, JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi)
            && !l.updating
            && !r.updating;
        let mut out = Stream { updating: !append_inner, ..Stream::changelog(0) };
        if append_inner {
            let window_join = match (l.window_end, r.window_end) {
                (Some(le), Some(re)) => lkeys.iter().zip(&rkeys).any(|(&a, &b)| a == le && b == re),
                _ => false,
            };
            if window_join {
                let (le, re) = (l.window_end.unwrap_or_default(), r.window_end.unwrap_or_default());
                left.expiry = Some((le, -1));
                right.expiry = Some((re, -1));
                out.window_start = l.window_start;
                out.window_end = Some(le);
            } else if let (Some(lt), Some(rt), Some(f)) = (l.rowtime, r.rowtime, &j.filter)
                && let Some((lower, upper)) = crate::interval_join::interval_bounds(f, &both, lt, nl + rt)
            {
                // Right rows with time in [left + lower, left + upper] match.
                left.expiry = Some((lt, upper));
                right.expiry = Some((rt, lower.saturating_neg()));
                out.rowtime = Some(lt);
            }
        }
        let sides = join_type.output_sides();
        let mut fields: Vec<arrow::datatypes::Field> = vec![];
        for (include, schema) in [(sides[0], &left_schema), (sides[1], &right_schema)] {
            if include {
                fields.extend(schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
            }
        }
        let joined_cols = fields.len();
        if out.updating {
            fields.push(op_field());
        }
        // A time-bounded side drops late rows; its table's 'late-records' says where they go.
        let late_table = |st: &Stream, bounded: bool| {
            st.table.as_ref().filter(|_| bounded).and_then(|name| self.tables.get(name)).cloned()
        };
        let late_tables = [late_table(&l, left.expiry.is_some()), late_table(&r, right.expiry.is_some())];
        let spec = JoinSpec {
            left,
            right,
            join_type,
            filter,
            output_schema: Arc::new(Schema::new(fields)),
            output_updating: out.updating,
            state_ttl: self.settings.state_ttl,
            late_output: [None, None],
        };
        // The left side's key columns stay where they are in the output (left columns first); a
        // key computed into an extra column is projected away below. A right or full join is not
        // partitioned by them: its unmatched right rows have NULL there and stay where their own
        // key put them.
        let left_keys_kept =
            matches!(join_type, JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti);
        if left_keys_kept && sides[0] && lkeys.iter().all(|&k| k < nl) {
            out.partitioned = Some(lkeys.clone());
        }
        out.stage = self.new_stage(
            PlannedInput::Join { left: (l.stage, lkeys), right: (r.stage, rkeys) },
            PlannedOp::Join(Arc::new(spec), Box::new(late_tables)),
        );
        if !lextra.is_empty() || !rextra.is_empty() {
            // Back to the join's own columns.
            let mut keep: Vec<usize> = vec![];
            if sides[0] {
                keep.extend(0..nl);
            }
            if sides[1] {
                let at = if sides[0] { left_schema.fields().len() } else { 0 };
                keep.extend(at..at + nr);
            }
            let exprs = keep.iter().map(|&i| col(&format!("c{i}"), i)).collect();
            self.project(&out, exprs, arrow_schema(&j.schema), joined_cols);
        }
        Ok(out)
    }

    /// A side's schema with its computed join keys appended (projected in its stage).
    fn key_columns(&mut self, s: &Stream, schema: &DFSchema, extra: &[Expr]) -> Result<SchemaRef> {
        let base = arrow_schema(schema);
        if extra.is_empty() {
            return Ok(base);
        }
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> =
            base.fields().iter().enumerate().map(|(i, f)| col(f.name(), i)).collect();
        let mut fields: Vec<arrow::datatypes::Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (k, e) in extra.iter().enumerate() {
            exprs.push(physical(self.state, e.clone(), schema)?);
            let (_, f) = datafusion::logical_expr::ExprSchemable::to_field(e, schema).map_err(planning("join keys"))?;
            fields.push(arrow::datatypes::Field::new(format!("__join_key_{k}"), f.data_type().clone(), true));
        }
        let with_keys = Arc::new(Schema::new(fields));
        self.project(s, exprs, with_keys.clone(), base.fields().len());
        Ok(with_keys)
    }
}

/// `expr` over (left ++ right) rewritten for (left ++ `extra` key columns ++ right): right-side
/// column indices move up by `extra`.
fn shift_right_columns(expr: Arc<dyn PhysicalExpr>, left: usize, extra: usize) -> Result<Arc<dyn PhysicalExpr>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    if extra == 0 {
        return Ok(expr);
    }
    expr.transform(|e| {
        Ok(match e.downcast_ref::<Column>() {
            Some(c) if c.index() >= left => Transformed::yes(col(c.name(), c.index() + extra)),
            _ => Transformed::no(e),
        })
    })
    .map(|t| t.data)
    .map_err(planning("join condition"))
}
