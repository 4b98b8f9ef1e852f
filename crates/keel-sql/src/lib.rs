//! Keel's Flink SQL front end. A pipeline file holds `CREATE TABLE` statements (Flink DDL with
//! `WITH` connector options and `WATERMARK FOR`) and one `INSERT INTO ... SELECT`. `plan` reads
//! and checks it completely (every refusal names the construct and its line and column) without
//! touching disk; `Pipeline::build_graph` then resolves sources against the data directory,
//! records first-start facts in the job file, and returns the runtime's job graph.

pub mod connectors;
pub mod error;
pub mod functions;
pub mod planner;
pub mod scalar;
pub mod script;

pub use connectors::{SinkKind, SourcePlan};
pub use error::{Pos, SqlError};

use crate::error::Result;
use crate::planner::{InsertPlan, Step};
use datafusion::sql::sqlparser::tokenizer::Token;
use keel_connectors::nexmark::NexmarkSource;
use keel_connectors::{BlackholeSink, FileSink, PrintSink, TopicSink, TopicSource, TopicSourceConfig};
use keel_log::Log;
use keel_runtime::ops::{Filter, Projection, WindowAggregate, WindowAssigner};
use keel_runtime::{JobDir, JobGraph, Operator, OperatorSpec, Partitioning, StageInput, StageSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub job: String,
    pub data_dir: PathBuf,
    pub parallelism: u32,
    pub bounded: bool,
}

/// A checked, planned pipeline.
pub struct Pipeline {
    /// Identifies the pipeline's meaning (whitespace and comments do not count).
    pub fingerprint: String,
    pub insert: InsertPlan,
    opts: PipelineOptions,
    /// The pipeline's INSERT was written `EXPLAIN INSERT ...`: print the plan, do not run.
    pub explain_only: bool,
}

/// Reads, checks and plans a pipeline file's text.
pub fn plan(sql: &str, opts: &PipelineOptions) -> Result<Pipeline> {
    let toks = script::tokenize(sql)?;
    let fingerprint = format!(
        "{:016x}",
        keel_types::keys::hash_key(
            toks.iter()
                .filter(|t| !matches!(t.token, Token::Whitespace(_)))
                .map(|t| t.token.to_string())
                .collect::<Vec<_>>()
                .join(" ")
                .as_bytes()
        )
    );
    let mut tables: HashMap<String, script::TableDef> = HashMap::new();
    let mut views: HashMap<String, Vec<script::Tok>> = HashMap::new();
    let mut explain = false;
    let mut inserts = vec![];
    for stmt in script::split_statements(toks) {
        let mut c = script::Cursor::new(&stmt);
        let pos = c.pos();
        if c.is_keyword("CREATE") {
            let kind = c.peek_nth(1).map(|t| t.token.to_string().to_uppercase());
            let kind = if kind.as_deref() == Some("TEMPORARY") {
                c.peek_nth(2).map(|t| t.token.to_string().to_uppercase())
            } else {
                kind
            };
            match kind.as_deref() {
                Some("TABLE") => {
                    let def = script::parse_create_table(&stmt)?;
                    if tables.contains_key(&def.name) {
                        return Err(SqlError::invalid(def.pos, format!("table {} is created twice", def.name)));
                    }
                    tables.insert(def.name.clone(), def);
                }
                Some("VIEW") => {
                    let (name, vpos, query) = script::parse_create_view(&stmt)?;
                    if tables.contains_key(&name) || views.contains_key(&name) {
                        return Err(SqlError::invalid(vpos, format!("{name} is created twice")));
                    }
                    views.insert(name, query);
                }
                Some("FUNCTION") => {
                    return Err(SqlError::unsupported(
                        pos,
                        "CREATE FUNCTION",
                        Some("register functions through the Rust API"),
                    ));
                }
                other => return Err(SqlError::unsupported(pos, format!("CREATE {}", other.unwrap_or_default()), None)),
            }
        } else if c.is_keyword("EXPLAIN") || c.is_keyword("INSERT") {
            if c.eat_keyword("EXPLAIN") {
                if c.eat_keyword("PLAN") {
                    c.expect_keyword("FOR")?;
                }
                explain = true;
            }
            c.expect_keyword("INSERT")?;
            c.expect_keyword("INTO")?;
            let (sink, spos) = c.ident()?;
            if c.peek().is_some_and(|t| t.token == Token::LParen) {
                return Err(SqlError::unsupported(
                    c.pos(),
                    "an INSERT column list",
                    Some("select the sink's columns in its order"),
                ));
            }
            let rest = script::inline_views(&stmt[c.index()..], &views, 0)?;
            inserts.push((sink, spos, rest));
        } else {
            let word = c.peek().map(|t| t.token.to_string().to_uppercase()).unwrap_or_default();
            let alt = match word.as_str() {
                "SELECT" => Some("write `INSERT INTO some_table SELECT ...` with a 'print' table to see results"),
                "SET" => Some("pass settings as `keel run` flags"),
                _ => None,
            };
            return Err(SqlError::unsupported(pos, format!("a {word} statement"), alt));
        }
    }
    let Some((sink, spos, query)) = inserts.first() else {
        return Err(SqlError::invalid(
            Pos { line: 1, column: 1 },
            "the pipeline has no INSERT INTO statement, so it produces nothing",
        ));
    };
    if let Some((_, pos, _)) = inserts.get(1) {
        return Err(SqlError::unsupported(
            *pos,
            "a second INSERT INTO in one pipeline",
            Some("run one pipeline file per INSERT"),
        ));
    }
    let insert = planner::plan_insert(&tables, (sink, *spos), query, &opts.job)?;
    Ok(Pipeline { fingerprint, insert, opts: opts.clone(), explain_only: explain })
}

fn describe_step(s: &Step) -> String {
    match s {
        Step::Filter(p) => format!("filter {p}"),
        Step::Project(exprs, _) => {
            format!("project [{}]", exprs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))
        }
    }
}

fn op(uid: String, f: impl Fn() -> keel_runtime::Result<Box<dyn Operator>> + Send + Sync + 'static) -> OperatorSpec {
    OperatorSpec { uid, factory: Arc::new(move |_ctx| f()) }
}

fn step_ops(steps: &[Step], prefix: &str) -> Vec<OperatorSpec> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| match s.clone() {
            Step::Filter(p) => {
                op(format!("{prefix}-filter-{i}"), move || Ok(Box::new(Filter { predicate: p.clone() })))
            }
            Step::Project(exprs, schema) => op(format!("{prefix}-project-{i}"), move || {
                Ok(Box::new(Projection { exprs: exprs.clone(), schema: schema.clone() }))
            }),
        })
        .collect()
}

impl Pipeline {
    /// A pipeline planned by other means than SQL (the Rust API). `fingerprint` must change
    /// whenever the meaning of the pipeline changes, so that state is never restored into a
    /// different pipeline.
    pub fn from_plan(insert: InsertPlan, opts: &PipelineOptions, fingerprint: String) -> Pipeline {
        Pipeline { fingerprint, insert, opts: opts.clone(), explain_only: false }
    }

    /// The streaming plan in words: stages, operators, exchanges, source and sink, then
    /// DataFusion's logical plan of the query.
    pub fn explain(&self) -> String {
        use std::fmt::Write;
        let ins = &self.insert;
        let p = self.opts.parallelism;
        let mut s = String::new();
        let source_desc = match &ins.source_plan {
            connectors::SourcePlan::Topic { topic, bad_records, .. } => {
                format!("topic '{topic}' (JSON, bad records: {bad_records:?})")
            }
            connectors::SourcePlan::Nexmark(n) => format!(
                "nexmark generator ({} events, {} per second of event time, {} splits)",
                n.events.map(|e| e.to_string()).unwrap_or_else(|| "unbounded".into()),
                n.rate,
                n.splits
            ),
        };
        let wm = ins
            .source
            .watermark
            .as_ref()
            .map(|w| format!("watermark {} - {} ms", w.column, w.delay_ms))
            .unwrap_or_else(|| "no watermark".into());
        let _ = writeln!(s, "Streaming plan (parallelism {p}):");
        let _ = writeln!(s, "  source {}: {source_desc}, {wm}", ins.source.name);
        let mut stage0 = vec![];
        if let Some((spec, _, _)) = &ins.window {
            stage0.push(format!("window assigner {spec:?}"));
        }
        stage0.extend(ins.below.iter().map(describe_step));
        let sink = format!("sink {}: {:?} ({})", ins.sink.name, ins.sink_kind, ins.sink_kind.guarantee());
        match &ins.aggregate {
            None => {
                stage0.push(sink);
                let _ = writeln!(s, "  stage 0 x{p}: {}", stage0.join(" -> "));
            }
            Some(agg) => {
                stage0.push(format!("aggregate input ({} columns)", agg.pre_projection.0.len()));
                let _ = writeln!(s, "  stage 0 x{p}: {}", stage0.join(" -> "));
                let _ = writeln!(s, "    exchange: hash by the first {} column(s) over key groups", agg.spec.num_keys);
                let mut stage1 = vec![format!(
                    "window aggregate [{}] (keyed state, emits when the watermark passes window_end - 1)",
                    agg.spec.aggregates.iter().map(|a| format!("{:?}", a.func)).collect::<Vec<_>>().join(", ")
                )];
                stage1.extend(ins.above.iter().map(describe_step));
                stage1.push(sink);
                let _ = writeln!(s, "  stage 1 x{p}: {}", stage1.join(" -> "));
            }
        }
        let _ = writeln!(s, "DataFusion logical plan of the query:");
        for line in ins.logical_plan.lines() {
            let _ = writeln!(s, "  {line}");
        }
        s
    }

    /// The sink's name and its delivery guarantee.
    pub fn sink_guarantee(&self) -> (String, &'static str) {
        (self.insert.sink.name.clone(), self.insert.sink_kind.guarantee())
    }

    /// True when every source ends by itself (a nexmark table with 'events.num'), so the job
    /// finishes like a `--bounded` one.
    pub fn sources_bounded(&self) -> bool {
        matches!(&self.insert.source_plan, connectors::SourcePlan::Nexmark(c) if c.events.is_some())
    }

    /// Checks that the sources can be read (topics exist, generator columns match) before any
    /// job state is created.
    pub fn check_sources(&self) -> Result<()> {
        match &self.insert.source_plan {
            connectors::SourcePlan::Topic { topic, .. } => {
                Log::open(&self.opts.data_dir)?.topic(topic)?;
            }
            connectors::SourcePlan::Nexmark(_) => {
                let schema = self.stored_schema();
                keel_connectors::nexmark::check_schema(&schema).map_err(|e| {
                    SqlError::invalid(self.insert.source.pos, format!("table {}: {e}", self.insert.source.name))
                })?;
            }
        }
        Ok(())
    }

    /// The source's columns as stored or generated (without computed columns).
    fn stored_schema(&self) -> arrow::datatypes::SchemaRef {
        let ins = &self.insert;
        ins.source_computed.as_ref().map(|c| c.base.clone()).unwrap_or_else(|| ins.source_schema.clone())
    }

    /// The event-time column (in the table's schema) and the watermark delay.
    fn event_time(&self) -> Option<(usize, i64)> {
        let src = &self.insert.source;
        src.watermark
            .as_ref()
            .and_then(|w| src.columns.iter().position(|c| c.name == w.column).map(|i| (i, w.delay_ms)))
    }

    /// The source stage's input: resolves topic offsets (recorded at the first start) or the
    /// generator's settings.
    fn source_input(&self, job: &mut JobDir) -> Result<StageInput> {
        let ins = &self.insert;
        let uid = format!("source-{}", ins.source.name);
        let computed = ins.source_computed.as_ref().map(|c| (c.exprs.clone(), c.schema.clone()));
        let (topic, bad_records, startup_latest, idle_timeout) = match &ins.source_plan {
            connectors::SourcePlan::Topic { topic, bad_records, startup_latest, idle_timeout } => {
                (topic, bad_records, startup_latest, idle_timeout)
            }
            connectors::SourcePlan::Nexmark(n) => {
                let cfg = keel_connectors::nexmark::NexmarkConfig {
                    table: ins.source.name.clone(),
                    schema: self.stored_schema(),
                    computed,
                    event_time: self.event_time(),
                    ..n.clone()
                };
                return Ok(StageInput::Source {
                    uid,
                    factory: Arc::new(move |_ctx| {
                        Ok(Box::new(NexmarkSource::new(cfg.clone())) as Box<dyn keel_runtime::Source>)
                    }),
                });
            }
        };
        let log = Log::open(&self.opts.data_dir)?;
        let t = log.topic(topic)?;
        // Create the topics this job writes now, before tasks start.
        if let keel_connectors::BadRecordPolicy::DeadLetter { topic } = bad_records {
            log.topic_or_create(topic, keel_log::TopicConfig::new(1))?;
        }
        let infos = t.describe()?;
        let mut fact = job.file.sources.get(&uid).cloned().unwrap_or_else(|| serde_json::json!({}));
        let mut changed = false;
        if fact.get("start").is_none() {
            let start: Vec<u64> =
                infos.iter().map(|i| if *startup_latest { i.end_offset } else { i.start_offset }).collect();
            fact["start"] = start.into();
            changed = true;
        }
        if self.opts.bounded && fact.get("end").is_none() {
            let end: Vec<u64> = infos.iter().map(|i| i.end_offset).collect();
            fact["end"] = end.into();
            changed = true;
        }
        if changed {
            job.set_source_fact(&uid, fact.clone())?;
        }
        let offsets = |k: &str| -> Option<Vec<u64>> { serde_json::from_value(fact.get(k)?.clone()).ok() };
        let cfg = TopicSourceConfig {
            data_dir: self.opts.data_dir.clone(),
            table: ins.source.name.clone(),
            topic: topic.clone(),
            schema: self.stored_schema(),
            computed,
            event_time: self.event_time(),
            start_offsets: offsets("start").unwrap_or_default(),
            end_offsets: if self.opts.bounded { offsets("end") } else { None },
            bad_records: bad_records.clone(),
            idle_timeout: *idle_timeout,
            max_batch_bytes: 1 << 20,
        };
        let src_uid = uid.clone();
        Ok(StageInput::Source {
            uid,
            factory: Arc::new(move |_ctx| {
                Ok(Box::new(TopicSource::new(cfg.clone(), &src_uid)?) as Box<dyn keel_runtime::Source>)
            }),
        })
    }

    /// Resolves sources (recording start and bounded end offsets at the first start) and builds
    /// the job graph.
    pub fn build_graph(&self, job: &mut JobDir) -> Result<JobGraph> {
        let ins = &self.insert;
        let log = Log::open(&self.opts.data_dir)?;
        if let SinkKind::Topic { topic } = &ins.sink_kind {
            log.topic_or_create(topic, keel_log::TopicConfig::new(1))?;
        }
        let source = self.source_input(job)?;
        let p = self.opts.parallelism;
        let mut chain0 = vec![];
        if let Some((spec, col, schema)) = &ins.window {
            let (spec, col, schema) = (*spec, *col, schema.clone());
            chain0.push(op("window-assigner".into(), move || {
                Ok(Box::new(WindowAssigner { spec, time_column: col, schema: schema.clone() }))
            }));
        }
        chain0.extend(step_ops(&ins.below, "pre"));
        let sink = self.sink_op();
        let mut stages = vec![];
        match &ins.aggregate {
            None => {
                chain0.push(sink);
                stages.push(StageSpec {
                    name: format!("{} -> {}", ins.source.name, ins.sink.name),
                    parallelism: p,
                    input: source,
                    chain: chain0,
                });
            }
            Some(agg) => {
                let (exprs, schema) = agg.pre_projection.clone();
                chain0.push(op("aggregate-input".into(), move || {
                    Ok(Box::new(Projection { exprs: exprs.clone(), schema: schema.clone() }))
                }));
                stages.push(StageSpec {
                    name: format!("{} scan", ins.source.name),
                    parallelism: p,
                    input: source,
                    chain: chain0,
                });
                let spec = agg.spec.clone();
                let mut chain1 =
                    vec![op("window-aggregate".into(), move || Ok(Box::new(WindowAggregate::new(spec.clone())?)))];
                chain1.extend(step_ops(&ins.above, "post"));
                chain1.push(sink);
                stages.push(StageSpec {
                    name: format!("window aggregate -> {}", ins.sink.name),
                    parallelism: p,
                    input: StageInput::Upstream {
                        stage: 0,
                        partitioning: Partitioning::Hash((0..agg.spec.num_keys).collect()),
                    },
                    chain: chain1,
                });
            }
        }
        Ok(JobGraph { stages })
    }

    fn sink_op(&self) -> OperatorSpec {
        let name = self.insert.sink.name.clone();
        let uid = format!("sink-{name}");
        let data_dir = self.opts.data_dir.clone();
        match self.insert.sink_kind.clone() {
            SinkKind::Topic { topic } => {
                let u = uid.clone();
                op(uid, move || Ok(Box::new(TopicSink::new(data_dir.clone(), topic.clone(), u.clone()))))
            }
            SinkKind::Filesystem { path, format } => op(uid, move || Ok(Box::new(FileSink::new(path.clone(), format)))),
            SinkKind::Print => op(uid, move || Ok(Box::new(PrintSink { table: name.clone() }))),
            SinkKind::Blackhole => op(uid, || Ok(Box::new(BlackholeSink::default()))),
        }
    }
}
