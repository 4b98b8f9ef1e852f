//! The Rust API: build a pipeline from a topic source, DataFusion expressions, a key-by with a
//! window and aggregates, and a sink, then run it with the same checkpointing, recovery and
//! exactly-once sinks as `keel run`.
//!
//! ```no_run
//! use keel::api::{Agg, PipelineBuilder, RunOptions};
//! use datafusion::prelude::{col, lit};
//! # fn main() -> Result<(), keel::api::ApiError> {
//! let outcome = PipelineBuilder::topic_source("totals", "./keel-data".as_ref(), "events", keel::api::event_schema(), "ts", 1_000)?
//!     .filter(col("amount").gt(lit(0)))?
//!     .tumble(10_000)?
//!     .aggregate(vec![col("user_id")], vec![Agg::count_star("n"), Agg::sum(col("amount"), "total")])?
//!     .to_topic("totals")?
//!     .run(&RunOptions { bounded: true, ..RunOptions::default() })?;
//! # Ok(()) }
//! ```
//!
//! Invariant: each builder step type-checks against the schema produced by the step before it,
//! so a pipeline that builds also plans; the description of every step feeds the fingerprint
//! that guards restores.

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};
use keel_connectors::BadRecordPolicy;
use keel_runtime::ops::{AggregateCall, AggregateFunction, GroupColumn};
use keel_runtime::{JobConfig, JobDir, JobOutcome, Metrics};
use keel_sql::plan::{AggregatePlan, InsertPlan, LinearPlan, SourceNode, Step};
use keel_sql::script::{ColumnDef, TableDef, WatermarkDef};
use keel_sql::{Pos, SinkKind, SourcePlan};
use keel_types::WindowSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Errors of the Rust API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("expression {expr}: {message}")]
    Expr { expr: String, message: String },
    #[error(transparent)]
    Sql(#[from] keel_sql::SqlError),
    #[error(transparent)]
    Runtime(#[from] keel_runtime::RuntimeError),
}

/// The schema of the sample events (`user_id`, `amount`, `ts`).
pub fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

/// An aggregate call with its output column name.
pub struct Agg {
    func: AggregateFunction,
    arg: Option<Expr>,
    name: String,
}

impl Agg {
    pub fn count_star(name: &str) -> Agg {
        Agg { func: AggregateFunction::CountStar, arg: None, name: name.into() }
    }
    pub fn count(e: Expr, name: &str) -> Agg {
        Agg { func: AggregateFunction::Count, arg: Some(e), name: name.into() }
    }
    pub fn sum(e: Expr, name: &str) -> Agg {
        Agg { func: AggregateFunction::Sum, arg: Some(e), name: name.into() }
    }
    pub fn avg(e: Expr, name: &str) -> Agg {
        Agg { func: AggregateFunction::Avg, arg: Some(e), name: name.into() }
    }
    pub fn min(e: Expr, name: &str) -> Agg {
        Agg { func: AggregateFunction::Min, arg: Some(e), name: name.into() }
    }
    pub fn max(e: Expr, name: &str) -> Agg {
        Agg { func: AggregateFunction::Max, arg: Some(e), name: name.into() }
    }
}

/// How to run a built pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub parallelism: u32,
    pub bounded: bool,
    pub checkpoint_interval: Option<Duration>,
    pub fresh: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { parallelism: 1, bounded: false, checkpoint_interval: Some(Duration::from_secs(1)), fresh: false }
    }
}

/// A pipeline under construction.
pub struct PipelineBuilder {
    name: String,
    data_dir: PathBuf,
    source: TableDef,
    source_schema: SchemaRef,
    schema: Arc<DFSchema>,
    window: Option<(WindowSpec, usize, SchemaRef)>,
    below: Vec<Step>,
    aggregate: Option<AggregatePlan>,
    above: Vec<Step>,
    description: Vec<String>,
}

/// A table column for an Arrow field.
fn column_def(f: &Field, nullable: bool) -> ColumnDef {
    ColumnDef {
        name: f.name().clone(),
        data_type: f.data_type().clone(),
        nullable,
        pos: Pos::default(),
        computed: None,
    }
}

fn df_schema(s: &SchemaRef) -> Result<Arc<DFSchema>, ApiError> {
    DFSchema::try_from(s.as_ref().clone()).map(Arc::new).map_err(|e| ApiError::Invalid(e.to_string()))
}

fn physical(e: &Expr, schema: &DFSchema) -> Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>, ApiError> {
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.state()
        .create_physical_expr(e.clone(), schema)
        .map_err(|x| ApiError::Expr { expr: e.to_string(), message: x.strip_backtrace() })
}

fn field_of(e: &Expr, schema: &DFSchema, name: &str) -> Result<Field, ApiError> {
    let (_, f) =
        e.to_field(schema).map_err(|x| ApiError::Expr { expr: e.to_string(), message: x.strip_backtrace() })?;
    Ok(Field::new(name, f.data_type().clone(), f.is_nullable()))
}

impl PipelineBuilder {
    /// Reads JSON records of `schema` from `topic`; `time_column` is the event time, and the
    /// watermark trails the largest time seen by `delay_ms`.
    pub fn topic_source(
        name: &str,
        data_dir: &Path,
        topic: &str,
        schema: SchemaRef,
        time_column: &str,
        delay_ms: i64,
    ) -> Result<Self, ApiError> {
        if schema.index_of(time_column).is_err() {
            return Err(ApiError::Invalid(format!("the source schema has no time column {time_column}")));
        }
        let columns = schema.fields().iter().map(|f| column_def(f, f.is_nullable())).collect();
        let source = TableDef {
            name: topic.to_string(),
            pos: Pos::default(),
            columns,
            watermark: Some(WatermarkDef { column: time_column.into(), delay_ms, pos: Pos::default() }),
            primary_key: None,
            partition_by: vec![],
            options: vec![],
        };
        Ok(PipelineBuilder {
            name: name.into(),
            data_dir: data_dir.into(),
            source,
            schema: df_schema(&schema)?,
            source_schema: schema,
            window: None,
            below: vec![],
            aggregate: None,
            above: vec![],
            description: vec![format!("topic_source({topic}, {time_column}, {delay_ms})")],
        })
    }

    fn steps(&mut self) -> &mut Vec<Step> {
        if self.aggregate.is_some() { &mut self.above } else { &mut self.below }
    }

    /// Keeps rows where `predicate` is true.
    pub fn filter(mut self, predicate: Expr) -> Result<Self, ApiError> {
        let p = physical(&predicate, &self.schema)?;
        self.description.push(format!("filter({predicate})"));
        self.steps().push(Step::Filter(p));
        Ok(self)
    }

    /// Computes new columns: `(expression, name)` pairs.
    pub fn select(mut self, exprs: Vec<(Expr, &str)>) -> Result<Self, ApiError> {
        let mut phys = vec![];
        let mut fields = vec![];
        for (e, name) in &exprs {
            phys.push(physical(e, &self.schema)?);
            fields.push(field_of(e, &self.schema, name)?);
        }
        let schema = Arc::new(Schema::new(fields));
        self.description.push(format!(
            "select({})",
            exprs.iter().map(|(e, n)| format!("{e} AS {n}")).collect::<Vec<_>>().join(", ")
        ));
        self.steps().push(Step::Project(phys, schema.clone()));
        self.schema = df_schema(&schema)?;
        Ok(self)
    }

    /// Assigns rows to windows (adds `window_start`, `window_end`, `window_time`).
    pub fn window(mut self, spec: WindowSpec) -> Result<Self, ApiError> {
        spec.validate().map_err(ApiError::Invalid)?;
        // The assigner runs first in the chain; filters before it see the same column positions.
        if self.window.is_some() || self.below.iter().any(|s| matches!(s, Step::Project(..))) {
            return Err(ApiError::Invalid(
                "window() comes once, after the source and any filters, before select()".into(),
            ));
        }
        let col = self
            .source_schema
            .index_of(&self.source.watermark.as_ref().map(|w| w.column.clone()).unwrap_or_default())
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        let mut fields: Vec<Field> = self.source_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for n in ["window_start", "window_end", "window_time"] {
            fields.push(Field::new(n, DataType::Timestamp(TimeUnit::Millisecond, None), false));
        }
        let schema = Arc::new(Schema::new(fields));
        self.schema = df_schema(&schema)?;
        self.window = Some((spec, col, schema));
        self.description.push(format!("window({spec:?})"));
        Ok(self)
    }

    /// `window(Tumble)` of `size_ms`.
    pub fn tumble(self, size_ms: i64) -> Result<Self, ApiError> {
        self.window(WindowSpec::Tumble { size: size_ms, offset: 0 })
    }

    /// Keys by `keys` within each window and aggregates; output columns are the keys (named as
    /// the expressions), `window_start`, `window_end`, then the aggregates.
    pub fn aggregate(mut self, keys: Vec<Expr>, aggs: Vec<Agg>) -> Result<Self, ApiError> {
        if self.window.is_none() || self.aggregate.is_some() {
            return Err(ApiError::Invalid("aggregate() needs a window() before it, and comes once".into()));
        }
        let mut pre = vec![];
        let mut pre_fields = vec![];
        let mut out_fields = vec![];
        for (i, k) in keys.iter().enumerate() {
            pre.push(physical(k, &self.schema)?);
            let f = field_of(k, &self.schema, &format!("key_{i}"))?;
            out_fields.push(Field::new(k.schema_name().to_string(), f.data_type().clone(), true));
            pre_fields.push(f);
        }
        for n in ["window_start", "window_end"] {
            pre.push(physical(&datafusion::prelude::col(n), &self.schema)?);
            pre_fields.push(Field::new(n, DataType::Timestamp(TimeUnit::Millisecond, None), false));
            out_fields.push(Field::new(n, DataType::Timestamp(TimeUnit::Millisecond, None), false));
        }
        let mut calls = vec![];
        for a in &aggs {
            let (arg, out_type) = match &a.arg {
                None => (None, DataType::Int64),
                Some(e) => {
                    pre.push(physical(e, &self.schema)?);
                    let f = field_of(e, &self.schema, &format!("arg_{}", pre.len() - 1))?;
                    let t = match a.func {
                        AggregateFunction::Count | AggregateFunction::CountStar => DataType::Int64,
                        _ => f.data_type().clone(),
                    };
                    pre_fields.push(f);
                    (Some(pre.len() - 1), t)
                }
            };
            out_fields.push(Field::new(&a.name, out_type.clone(), true));
            calls.push(AggregateCall { func: a.func, arg, output_type: out_type, user: None });
        }
        let nk = keys.len();
        let mut group_output: Vec<GroupColumn> = (0..nk).map(GroupColumn::Key).collect();
        group_output.extend([GroupColumn::WindowStart, GroupColumn::WindowEnd]);
        let out_schema = Arc::new(Schema::new(out_fields));
        self.description.push(format!(
            "aggregate([{}], [{}])",
            keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
            aggs.iter()
                .map(|a| format!("{:?}({:?}) AS {}", a.func, a.arg.as_ref().map(|e| e.to_string()), a.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.aggregate = Some(AggregatePlan::new(pre, pre_fields, nk, calls, group_output, out_schema.clone()));
        self.schema = df_schema(&out_schema)?;
        Ok(self)
    }

    /// Writes the rows as JSON records to a topic, exactly once.
    pub fn to_topic(self, topic: &str) -> Result<BuiltPipeline, ApiError> {
        self.finish(topic, SinkKind::Topic { topic: topic.into() })
    }

    /// Prints the rows (at-least-once).
    pub fn to_print(self) -> Result<BuiltPipeline, ApiError> {
        self.finish("print", SinkKind::Print)
    }

    fn finish(mut self, sink_name: &str, kind: SinkKind) -> Result<BuiltPipeline, ApiError> {
        let arrow_schema = Arc::new(self.schema.as_arrow().clone());
        let cols: Vec<ColumnDef> = arrow_schema.fields().iter().map(|f| column_def(f, true)).collect();
        let sink_schema = Arc::new(Schema::new(
            cols.iter().map(|c| Field::new(&c.name, c.data_type.clone(), true)).collect::<Vec<_>>(),
        ));
        let identity = (0..cols.len())
            .map(|i| {
                Arc::new(datafusion::physical_expr::expressions::Column::new(sink_schema.field(i).name(), i))
                    as Arc<dyn datafusion::physical_expr::PhysicalExpr>
            })
            .collect();
        self.steps().push(Step::Project(identity, sink_schema));
        let mut below = self.below;
        let mut above = self.above;
        if self.aggregate.is_none() {
            below.append(&mut above);
        }
        self.description.push(format!("sink({sink_name})"));
        let fingerprint = format!("{:016x}", keel_types::keys::hash_key(self.description.join("|").as_bytes()));
        let insert = InsertPlan::linear(LinearPlan {
            source: SourceNode {
                table: self.source.clone(),
                plan: SourcePlan::Topic {
                    topic: self.source.name.clone(),
                    bad_records: BadRecordPolicy::DeadLetter { topic: format!("{}-dead-letter", self.name) },
                    startup_latest: false,
                    idle_timeout: Some(Duration::from_secs(5)),
                },
                schema: self.source_schema,
                computed: None,
            },
            window: self.window,
            below,
            aggregate: self.aggregate,
            above,
            sink: TableDef {
                name: sink_name.into(),
                pos: Pos::default(),
                columns: cols,
                watermark: None,
                primary_key: None,
                partition_by: vec![],
                options: vec![],
            },
            sink_kind: kind,
            logical_plan: self.description.join("\n"),
        });
        Ok(BuiltPipeline { name: self.name, data_dir: self.data_dir, insert, fingerprint })
    }
}

/// A complete pipeline, ready to run.
pub struct BuiltPipeline {
    name: String,
    data_dir: PathBuf,
    insert: InsertPlan,
    fingerprint: String,
}

impl BuiltPipeline {
    /// Runs the pipeline to its end (bounded) or until `stop` is set, under the restart strategy.
    pub fn run_until(
        &self,
        options: &RunOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<(JobOutcome, Arc<Metrics>), ApiError> {
        let opts = keel_sql::PipelineOptions {
            job: self.name.clone(),
            data_dir: self.data_dir.clone(),
            parallelism: options.parallelism,
            bounded: options.bounded,
            udfs: vec![],
            udafs: vec![],
        };
        let pipeline = keel_sql::Pipeline::from_plan(self.insert.clone(), &opts, self.fingerprint.clone());
        let mut job = JobDir::open(&self.data_dir, &self.name, &pipeline.fingerprint, options.fresh)?;
        let graph = pipeline.build_graph(&mut job)?;
        let mut config = JobConfig::new(&self.name, &self.data_dir);
        config.bounded = options.bounded;
        config.checkpoint_interval = options.checkpoint_interval;
        let metrics = Arc::new(Metrics::default());
        let outcome = keel_runtime::run_job(&graph, &config, &job, metrics.clone(), stop)?;
        Ok((outcome, metrics))
    }

    /// `run_until` without an external stop signal.
    pub fn run(&self, options: &RunOptions) -> Result<JobOutcome, ApiError> {
        Ok(self.run_until(options, Arc::new(AtomicBool::new(false)))?.0)
    }
}

/// Plans and runs a SQL pipeline from Rust, with user-defined scalar functions (Rust code) the
/// SQL may call: `udfs` are registered in the planner under their names.
pub fn run_sql(
    sql: &str,
    name: &str,
    data_dir: &Path,
    udfs: Vec<datafusion::logical_expr::ScalarUDF>,
    options: &RunOptions,
) -> Result<JobOutcome, ApiError> {
    run_sql_with_functions(sql, name, data_dir, Functions { scalar: udfs, aggregate: vec![] }, options)
}

/// User-defined functions for `run_sql_with_functions`.
#[derive(Default)]
pub struct Functions {
    /// Scalar functions (`datafusion::logical_expr::create_udf` or a `ScalarUDFImpl`).
    pub scalar: Vec<datafusion::logical_expr::ScalarUDF>,
    /// Aggregate functions (`create_udaf` or an `AggregateUDFImpl`): Keel runs one accumulator per
    /// group and checkpoints its `state()`; over an updating input it needs `retract_batch`.
    pub aggregate: Vec<datafusion::logical_expr::AggregateUDF>,
}

/// `run_sql` with user-defined scalar and aggregate functions.
pub fn run_sql_with_functions(
    sql: &str,
    name: &str,
    data_dir: &Path,
    functions: Functions,
    options: &RunOptions,
) -> Result<JobOutcome, ApiError> {
    let opts = keel_sql::PipelineOptions {
        job: name.into(),
        data_dir: data_dir.into(),
        parallelism: options.parallelism,
        bounded: options.bounded,
        udfs: functions.scalar,
        udafs: functions.aggregate,
    };
    let pipeline = keel_sql::plan(sql, &opts)?;
    pipeline.check_sources()?;
    let mut job = JobDir::open(data_dir, name, &pipeline.fingerprint, options.fresh)?;
    let graph = pipeline.build_graph(&mut job)?;
    let mut config = JobConfig::new(name, data_dir);
    config.bounded = options.bounded || pipeline.sources_bounded();
    config.checkpoint_interval = options.checkpoint_interval;
    Ok(keel_runtime::run_job(&graph, &config, &job, Arc::new(Metrics::default()), Arc::new(AtomicBool::new(false)))?)
}
