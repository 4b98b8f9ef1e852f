//! Turning one planned `INSERT` into runtime stages: its sources (topic offsets recorded at the
//! first start, or the generators), each stage's operator chain and the exchange feeding it, and
//! the sink closing the last stage; plus its part of EXPLAIN.
//!
//! Invariant: operator uids of the first INSERT carry no prefix and those of the n-th (n > 0)
//! carry `in-`, so that a pipeline's state keeps its names when INSERTs are added after it, and
//! two INSERTs reading the same table never share a uid.

use crate::PipelineOptions;
use crate::connectors::{self, SinkKind};
use crate::error::{Result, SqlError};
use crate::plan::{InsertPlan, PlannedInput, PlannedOp, SourceNode, Step};
use keel_connectors::nexmark::NexmarkSource;
use keel_connectors::{TopicSource, TopicSourceConfig};
use keel_log::Log;
use keel_runtime::ops::{
    Filter, GroupAggregate, Join, OverAggregate, Projection, Rank, WindowAggregate, WindowAssigner, WindowTopN,
};
use keel_runtime::{JobDir, Operator, OperatorSpec, Partitioning, StageInput, StageSpec};
use std::sync::Arc;

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

fn step_op(uid: String, s: Step) -> OperatorSpec {
    match s {
        Step::Filter(p) => op(uid, move || Ok(Box::new(Filter { predicate: p.clone() }))),
        Step::Project(exprs, schema) => {
            op(uid, move || Ok(Box::new(Projection { exprs: exprs.clone(), schema: schema.clone() })))
        }
    }
}

fn describe_op(o: &PlannedOp) -> String {
    match o {
        PlannedOp::WindowAssign(spec, _, _) => format!("window assigner {spec:?}"),
        PlannedOp::Step(s) => describe_step(s),
        PlannedOp::WindowAggregate { spec, .. } => format!(
            "window aggregate [{}] (keyed state{}, emits when the watermark passes window_end - 1)",
            spec.aggregates.iter().map(|a| format!("{:?}", a.func)).collect::<Vec<_>>().join(", "),
            match spec.hop_slices {
                Some((size, slide)) => format!(", HOP windows of {size} ms built from {slide} ms slices"),
                None => String::new(),
            }
        ),
        PlannedOp::WindowTopN(..) => "window top-n (numbers each window partition when the window closes)".into(),
        PlannedOp::GroupAggregate(g) => format!(
            "group aggregate [{}] (keyed state{}, emits a changelog)",
            g.aggregates.iter().map(|a| format!("{:?}", a.func)).collect::<Vec<_>>().join(", "),
            g.state_ttl.map(|t| format!(", TTL {t:?}")).unwrap_or_default()
        ),
        PlannedOp::Join(j, _) => {
            let kind = match (j.left.expiry, j.output_updating) {
                (Some(_), _) => "time-bounded (interval or window) join, rows dropped as the watermark passes",
                (None, true) => "regular join, emits a changelog",
                (None, false) => "regular join, append-only",
            };
            format!("{:?} join on {} key(s): {kind}", j.join_type, j.left.keys.len())
        }
        PlannedOp::Rank(r) => format!(
            "top-{} per partition {:?} ({}, emits a changelog)",
            r.limit,
            r.partition_cols,
            if r.input_updating { "all rows kept" } else { "only the top rows kept" }
        ),
        PlannedOp::Over(o, _) => {
            format!("OVER aggregation {:?} (emits each row when the watermark passes it)", o.frame)
        }
    }
}

/// One INSERT of a pipeline, ready to become stages.
pub(crate) struct InsertBuilder<'a> {
    pub ins: &'a InsertPlan,
    pub opts: &'a PipelineOptions,
    pub prefix: String,
}

impl InsertBuilder<'_> {
    fn describe_source(n: &SourceNode) -> String {
        let desc = match &n.plan {
            connectors::SourcePlan::Topic { topic, bad_records, .. } => {
                format!("topic '{topic}' (JSON, bad records: {bad_records:?})")
            }
            connectors::SourcePlan::Nexmark(c) => format!(
                "nexmark generator ({} events, {} per second of event time, {} splits{})",
                c.events.map(|e| e.to_string()).unwrap_or_else(|| "unbounded".into()),
                c.rate,
                c.splits,
                match &c.event_types {
                    None => String::new(),
                    Some(k) => format!(
                        ", rows built for event_type {} only",
                        k.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                }
            ),
            connectors::SourcePlan::Files(f) => format!(
                "files under {} ({:?}, {})",
                f.path.display(),
                f.format,
                match f.monitor_interval {
                    Some(i) => format!("watching for new files every {i:?}"),
                    None => "the files present at the first start".to_string(),
                }
            ),
            connectors::SourcePlan::Datagen(d) => format!(
                "datagen ({} rows, {} per second, {} splits, seed {})",
                d.rows.map(|e| e.to_string()).unwrap_or_else(|| "unbounded".into()),
                d.rate,
                d.splits,
                d.seed
            ),
        };
        let wm = n
            .table
            .watermark
            .as_ref()
            .map(|w| format!("watermark {} - {} ms", w.column, w.delay_ms))
            .unwrap_or_else(|| "no watermark".into());
        format!("source {}: {desc}, {wm}", n.table.name)
    }

    /// The streaming plan in words, then DataFusion's logical plan of the query.
    pub(crate) fn explain(&self) -> String {
        use std::fmt::Write;
        let ins = self.ins;
        let p = self.opts.parallelism;
        let mut s = String::new();
        let _ = writeln!(s, "Streaming plan (parallelism {p}):");
        let last = ins.stages.len().saturating_sub(1);
        for (i, st) in ins.stages.iter().enumerate() {
            let mut parts = vec![];
            match &st.input {
                PlannedInput::Source(n) => parts.push(Self::describe_source(n)),
                PlannedInput::Exchange { from, keys } => {
                    let _ = writeln!(s, "    exchange: stage {from} hashed by columns {keys:?} over key groups");
                }
                PlannedInput::Forward { from } => {
                    let _ = writeln!(s, "    forward: stage {from} (shared by several consumers)");
                }
                PlannedInput::Join { left, right } => {
                    let _ = writeln!(
                        s,
                        "    exchange: stage {} hashed by columns {:?} (left), stage {} by {:?} (right)",
                        left.0, left.1, right.0, right.1
                    );
                }
            }
            parts.extend(st.ops.iter().map(describe_op));
            if i == last {
                parts.push(format!(
                    "sink {}: {:?} ({}){}",
                    ins.sink.name,
                    ins.sink_kind,
                    ins.sink_kind.guarantee(),
                    if ins.updating { ", receives a changelog" } else { "" }
                ));
            }
            let _ = writeln!(s, "  stage {i} x{p}: {}", parts.join(" -> "));
        }
        let _ = writeln!(s, "DataFusion logical plan of the query:");
        for line in ins.logical_plan.lines() {
            let _ = writeln!(s, "  {line}");
        }
        s
    }

    /// The sink's name and its delivery guarantee.
    pub(crate) fn sink_guarantee(&self) -> (String, &'static str) {
        (self.ins.sink.name.clone(), self.ins.sink_kind.guarantee())
    }

    /// True when every source ends by itself (a nexmark table with 'events.num'), so the job
    /// finishes like a `--bounded` one.
    pub(crate) fn sources_bounded(&self) -> bool {
        self.ins.sources().all(|n| match &n.plan {
            connectors::SourcePlan::Nexmark(c) => c.events.is_some(),
            connectors::SourcePlan::Datagen(d) => d.rows.is_some(),
            connectors::SourcePlan::Files(f) => f.monitor_interval.is_none(),
            connectors::SourcePlan::Topic { .. } => false,
        })
    }

    /// Checks that the sources can be read (topics exist, generator columns match) before any
    /// job state is created.
    pub(crate) fn check_sources(&self) -> Result<()> {
        for n in self.ins.sources() {
            let invalid = |e: String| SqlError::invalid(n.table.pos, format!("table {}: {e}", n.table.name));
            match &n.plan {
                connectors::SourcePlan::Topic { topic, .. } => {
                    Log::open(&self.opts.data_dir)?.topic(topic)?;
                }
                connectors::SourcePlan::Nexmark(_) => {
                    keel_connectors::nexmark::check_schema(&stored_schema(n)).map_err(|e| invalid(e.to_string()))?;
                }
                connectors::SourcePlan::Files(f) => {
                    if n.computed.is_some() {
                        return Err(SqlError::unsupported(n.table.pos, "computed columns on a filesystem table", None));
                    }
                    if !f.path.exists() {
                        return Err(invalid(format!("path {} does not exist", f.path.display())));
                    }
                }
                connectors::SourcePlan::Datagen(_) => {
                    if n.computed.is_some() {
                        return Err(SqlError::unsupported(n.table.pos, "computed columns on a datagen table", None));
                    }
                    keel_connectors::datagen::check_schema(&stored_schema(n)).map_err(|e| invalid(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// The source stage's input: resolves topic offsets (recorded at the first start) or the
    /// generator's settings.
    fn source_input(&self, node: &SourceNode, uid: String, job: &mut JobDir) -> Result<StageInput> {
        let computed = node.computed.as_ref().map(|c| (c.exprs.clone(), c.schema.clone()));
        let (topic, bad_records, startup_latest, idle_timeout) = match &node.plan {
            connectors::SourcePlan::Topic { topic, bad_records, startup_latest, idle_timeout } => {
                (topic, bad_records, startup_latest, idle_timeout)
            }
            connectors::SourcePlan::Nexmark(n) => {
                let cfg = keel_connectors::nexmark::NexmarkConfig {
                    table: node.table.name.clone(),
                    schema: stored_schema(node),
                    computed,
                    event_time: event_time(node),
                    ..n.clone()
                };
                return Ok(StageInput::Source {
                    uid,
                    factory: Arc::new(move |_ctx| {
                        Ok(Box::new(NexmarkSource::new(cfg.clone())) as Box<dyn keel_runtime::Source>)
                    }),
                });
            }
            connectors::SourcePlan::Files(f) => {
                let mut files = None;
                if f.monitor_interval.is_none() {
                    // Bounded: the files present at the first start, recorded for every restart.
                    let recorded = job.file.sources.get(&uid).and_then(|v| v.get("files")).cloned();
                    let list: Vec<String> = match recorded.and_then(|v| serde_json::from_value(v).ok()) {
                        Some(l) => l,
                        None => {
                            let l = keel_connectors::file_source::list_files(&f.path)
                                .map_err(keel_runtime::RuntimeError::from)?;
                            job.set_source_fact(&uid, serde_json::json!({ "files": l }))?;
                            l
                        }
                    };
                    files = Some(list);
                }
                let cfg = keel_connectors::file_source::FileSourceConfig {
                    schema: stored_schema(node),
                    event_time: event_time(node),
                    files,
                    uid: uid.clone(),
                    ..f.clone()
                };
                return Ok(StageInput::Source {
                    uid,
                    factory: Arc::new(move |_ctx| {
                        Ok(Box::new(keel_connectors::file_source::FileSource::new(cfg.clone()))
                            as Box<dyn keel_runtime::Source>)
                    }),
                });
            }
            connectors::SourcePlan::Datagen(d) => {
                let cfg = keel_connectors::datagen::DatagenConfig {
                    table: node.table.name.clone(),
                    schema: stored_schema(node),
                    event_time: event_time(node),
                    ..d.clone()
                };
                return Ok(StageInput::Source {
                    uid,
                    factory: Arc::new(move |_ctx| {
                        Ok(Box::new(keel_connectors::datagen::DatagenSource::new(cfg.clone()))
                            as Box<dyn keel_runtime::Source>)
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
            table: node.table.name.clone(),
            topic: topic.clone(),
            schema: stored_schema(node),
            computed,
            event_time: event_time(node),
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

    /// Resolves the sources (recording start and bounded end offsets at the first start) and
    /// builds this INSERT's stages; `first_stage` is the index its first stage will have.
    pub(crate) fn stages(&self, job: &mut JobDir, first_stage: usize) -> Result<Vec<StageSpec>> {
        let ins = self.ins;
        let log = Log::open(&self.opts.data_dir)?;
        if let SinkKind::Topic { topic } | SinkKind::DebeziumTopic { topic } | SinkKind::UpsertTopic { topic, .. } =
            &ins.sink_kind
        {
            log.topic_or_create(topic, keel_log::TopicConfig::new(1))?;
        }
        let p = self.opts.parallelism;
        let pre = &self.prefix;
        let mut seen_sources: std::collections::HashMap<String, usize> = Default::default();
        let mut first_of_kind: std::collections::HashSet<&'static str> = Default::default();
        // The first operator of each stateful kind keeps the uid earlier versions gave it.
        let mut uid_of = |kind: &'static str, si: usize| {
            if first_of_kind.insert(kind) { format!("{pre}{kind}") } else { format!("{pre}{kind}-{si}") }
        };
        let last = ins.stages.len().saturating_sub(1);
        let mut out = vec![];
        for (si, st) in ins.stages.iter().enumerate() {
            let (input, name) = match &st.input {
                PlannedInput::Source(n) => {
                    let k = seen_sources.entry(n.table.name.clone()).or_insert(0);
                    *k += 1;
                    let uid = if *k == 1 {
                        format!("{pre}source-{}", n.table.name)
                    } else {
                        format!("{pre}source-{}-{k}", n.table.name)
                    };
                    (self.source_input(n, uid, job)?, format!("{} scan", n.table.name))
                }
                PlannedInput::Exchange { from, keys } => (
                    StageInput::Upstream { stage: first_stage + from, partitioning: Partitioning::Hash(keys.clone()) },
                    format!("stage {si}"),
                ),
                PlannedInput::Forward { from } => (
                    StageInput::Upstream { stage: first_stage + from, partitioning: Partitioning::Forward },
                    format!("stage {si}"),
                ),
                PlannedInput::Join { left, right } => (
                    StageInput::TwoInputs {
                        left: (first_stage + left.0, Partitioning::Hash(left.1.clone())),
                        right: (first_stage + right.0, Partitioning::Hash(right.1.clone())),
                    },
                    format!("join {si}"),
                ),
            };
            let mut chain = vec![];
            for (oi, o) in st.ops.iter().enumerate() {
                let spec = match o.clone() {
                    PlannedOp::WindowAssign(spec, col, schema) => {
                        let uid = if si == 0 {
                            format!("{pre}window-assigner")
                        } else {
                            format!("{pre}s{si}-window-assigner")
                        };
                        op(uid, move || Ok(Box::new(WindowAssigner::new(spec, col, schema.clone()))))
                    }
                    PlannedOp::Step(step) => {
                        let kind = if matches!(step, Step::Filter(_)) { "filter" } else { "project" };
                        step_op(format!("{pre}s{si}-{kind}-{oi}"), step)
                    }
                    PlannedOp::WindowAggregate { spec, late_table } => {
                        let uid = uid_of("window-aggregate", si);
                        let mut spec = spec.as_ref().clone();
                        spec.late_output = self.late_output(late_table.as_ref(), &format!("{uid}-late"))?;
                        let spec = Arc::new(spec);
                        op(uid, move || Ok(Box::new(WindowAggregate::new(spec.clone())?)))
                    }
                    PlannedOp::WindowTopN(spec, late_table) => {
                        let uid = uid_of("window-top-n", si);
                        let mut spec = spec.as_ref().clone();
                        spec.late_output = self.late_output(late_table.as_deref(), &format!("{uid}-late"))?;
                        let spec = Arc::new(spec);
                        op(uid, move || Ok(Box::new(WindowTopN::new(spec.clone()))))
                    }
                    PlannedOp::GroupAggregate(spec) => {
                        op(uid_of("group-aggregate", si), move || Ok(Box::new(GroupAggregate::new(spec.clone())?)))
                    }
                    PlannedOp::Join(spec, late_tables) => {
                        let uid = uid_of("join", si);
                        let mut spec = spec.as_ref().clone();
                        for (side, name) in ["left", "right"].into_iter().enumerate() {
                            let table = late_tables[side].as_ref();
                            spec.late_output[side] = self.late_output(table, &format!("{uid}-late-{name}"))?;
                        }
                        let spec = Arc::new(spec);
                        op(uid, move || Ok(Box::new(Join::new(spec.clone())?)))
                    }
                    PlannedOp::Rank(spec) => op(uid_of("rank", si), move || Ok(Box::new(Rank::new(spec.clone())?))),
                    PlannedOp::Over(spec, late_table) => {
                        let uid = uid_of("over", si);
                        let mut spec = spec.as_ref().clone();
                        spec.late_output = self.late_output(late_table.as_deref(), &format!("{uid}-late"))?;
                        let spec = Arc::new(spec);
                        op(uid, move || Ok(Box::new(OverAggregate::new(spec.clone())?)))
                    }
                };
                chain.push(spec);
            }
            let name = if si == last {
                chain.push(self.sink_op());
                format!("{name} -> {}", ins.sink.name)
            } else {
                name
            };
            out.push(StageSpec { name, parallelism: p, input, chain });
        }
        Ok(out)
    }

    /// The side output for late rows of a window aggregate, a time-bounded join side, a window
    /// Top-N or an OVER aggregation over `table`, if it asks for one.
    fn late_output(
        &self,
        table: Option<&crate::script::TableDef>,
        uid: &str,
    ) -> Result<Option<keel_runtime::SideOutputFactory>> {
        let Some(table) = table else { return Ok(None) };
        let Some(topic) = connectors::late_records(table, &self.opts.job)? else { return Ok(None) };
        let log = Log::open(&self.opts.data_dir)?;
        log.topic_or_create(&topic, keel_log::TopicConfig::new(1))?;
        let (data_dir, table, uid) = (self.opts.data_dir.clone(), table.name.clone(), uid.to_string());
        Ok(Some(keel_runtime::SideOutputFactory(Arc::new(move |ctx, restored| {
            let t =
                Log::open(&data_dir).and_then(|l| l.topic(&topic)).map_err(keel_connectors::ConnectorError::from)?;
            let writer = keel_connectors::staging::StagedTopicWriter::for_task(t, ctx, &uid, restored)?;
            Ok(Box::new(keel_connectors::staging::DeadLetterOutput { table: table.clone(), writer })
                as Box<dyn keel_runtime::SideOutput>)
        }))))
    }

    fn sink_op(&self) -> OperatorSpec {
        let name = &self.ins.sink.name;
        let uid = format!("{}sink-{name}", self.prefix);
        let factory = connectors::sink_operator(&self.ins.sink_kind, name, uid.clone(), self.opts.data_dir.clone());
        OperatorSpec { uid, factory }
    }
}

/// The source's columns as stored or generated (without computed columns).
fn stored_schema(n: &SourceNode) -> arrow::datatypes::SchemaRef {
    n.computed.as_ref().map(|c| c.base.clone()).unwrap_or_else(|| n.schema.clone())
}

/// The event-time column (in the table's schema) and the watermark delay.
fn event_time(n: &SourceNode) -> Option<(usize, i64)> {
    let t = &n.table;
    t.watermark.as_ref().and_then(|w| t.columns.iter().position(|c| c.name == w.column).map(|i| (i, w.delay_ms)))
}
