//! The planned form of one `INSERT`: a list of stages, each fed by a source, by one earlier
//! stage (through a hash exchange, or forwarded subtask to subtask), or by two earlier stages (a
//! join), running a chain of planned operators; the last stage ends in the sink. A stage may feed
//! several later stages (a subquery the query uses twice is planned once). `planner`/`translate` produce it, `build` turns
//! it into the runtime's job graph, and the Rust API builds the linear case directly.
//!
//! Invariants: a stage only reads earlier stages; the last stage is the one the sink closes;
//! `updating` is true exactly when the rows reaching the sink are a changelog (end in `_op`).

use crate::connectors::{SinkKind, SourcePlan};
use crate::planner::Computed;
use crate::script::TableDef;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use keel_runtime::ops::{
    AggregateCall, GroupAggregateSpec, GroupColumn, JoinSpec, OverSpec, RankSpec, TopNSpec, WindowAggregateSpec,
};
use keel_types::WindowSpec;
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
            processing_time: None,
            hop_slices: None,
        };
        AggregatePlan { pre_projection: (pre_exprs, pre_schema), spec: Arc::new(spec) }
    }
}

/// A table read by the query.
#[derive(Clone)]
pub struct SourceNode {
    pub table: TableDef,
    pub plan: SourcePlan,
    /// The table's columns (computed ones included).
    pub schema: SchemaRef,
    /// The table's computed columns, added right after decoding.
    pub computed: Option<Computed>,
}

/// Where a stage's rows come from.
#[derive(Clone)]
pub enum PlannedInput {
    Source(Box<SourceNode>),
    /// An earlier stage (index within this INSERT), hash partitioned by these columns.
    Exchange {
        from: usize,
        keys: Vec<usize>,
    },
    /// An earlier stage's rows, each subtask reading its own counterpart (no exchange): how a
    /// stage whose output several consumers share hands it to each of them.
    Forward {
        from: usize,
    },
    /// Two earlier stages, each hash partitioned by its join keys.
    Join {
        left: (usize, Vec<usize>),
        right: (usize, Vec<usize>),
    },
}

/// One operator of a stage's chain.
#[derive(Clone)]
pub enum PlannedOp {
    /// Adds window_start, window_end and window_time (a window TVF): spec, time column, schema.
    WindowAssign(WindowSpec, usize, SchemaRef),
    Step(Step),
    /// A window aggregate; `late_table` is the table whose 'late-records' option applies.
    WindowAggregate {
        spec: Arc<WindowAggregateSpec>,
        late_table: Option<TableDef>,
    },
    /// A window Top-N, with the table whose 'late-records' option applies to its late rows.
    WindowTopN(Arc<TopNSpec>, Option<Box<TableDef>>),
    GroupAggregate(Arc<GroupAggregateSpec>),
    /// A join, with the tables whose 'late-records' option applies to each side's late rows.
    Join(Arc<JoinSpec>, Box<[Option<TableDef>; 2]>),
    Rank(Arc<RankSpec>),
    /// An OVER aggregation, with the table whose 'late-records' option applies to its late rows.
    Over(Arc<OverSpec>, Option<Box<TableDef>>),
}

#[derive(Clone)]
pub struct PlannedStage {
    pub input: PlannedInput,
    pub ops: Vec<PlannedOp>,
}

/// One `INSERT INTO` planned down to stages.
#[derive(Clone)]
pub struct InsertPlan {
    pub stages: Vec<PlannedStage>,
    pub sink: TableDef,
    pub sink_kind: SinkKind,
    /// The rows reaching the sink are a changelog.
    pub updating: bool,
    /// DataFusion's optimized logical plan of the query, for EXPLAIN.
    pub logical_plan: String,
}

/// The linear shape the Rust API builds: source → steps → [window aggregate → steps] → sink.
pub struct LinearPlan {
    pub source: SourceNode,
    pub window: Option<(WindowSpec, usize, SchemaRef)>,
    pub below: Vec<Step>,
    pub aggregate: Option<AggregatePlan>,
    pub above: Vec<Step>,
    pub sink: TableDef,
    pub sink_kind: SinkKind,
    pub logical_plan: String,
}

impl InsertPlan {
    /// The stages of a linear plan.
    pub fn linear(p: LinearPlan) -> InsertPlan {
        let mut ops = vec![];
        if let Some((spec, col, schema)) = p.window {
            ops.push(PlannedOp::WindowAssign(spec, col, schema));
        }
        ops.extend(p.below.into_iter().map(PlannedOp::Step));
        let mut stages = vec![];
        let late_table = Some(p.source.table.clone());
        let input = PlannedInput::Source(Box::new(p.source));
        match p.aggregate {
            None => {
                ops.extend(p.above.into_iter().map(PlannedOp::Step));
                stages.push(PlannedStage { input, ops });
            }
            Some(agg) => {
                let (exprs, schema) = agg.pre_projection;
                ops.push(PlannedOp::Step(Step::Project(exprs, schema)));
                stages.push(PlannedStage { input, ops });
                let keys = (0..agg.spec.num_keys).collect();
                let mut ops = vec![PlannedOp::WindowAggregate { spec: agg.spec, late_table }];
                ops.extend(p.above.into_iter().map(PlannedOp::Step));
                stages.push(PlannedStage { input: PlannedInput::Exchange { from: 0, keys }, ops });
            }
        }
        InsertPlan { stages, sink: p.sink, sink_kind: p.sink_kind, updating: false, logical_plan: p.logical_plan }
    }

    /// The tables this INSERT reads, one per source stage.
    pub fn sources(&self) -> impl Iterator<Item = &SourceNode> {
        self.stages.iter().filter_map(|s| match &s.input {
            PlannedInput::Source(n) => Some(n.as_ref()),
            _ => None,
        })
    }
}
