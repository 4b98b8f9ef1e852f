//! Turning one planned `INSERT` into runtime stages: its source (topic offsets recorded at the
//! first start, or the generator), the operator chain, the exchange before a window aggregate,
//! and the sink; plus its part of EXPLAIN.
//!
//! Invariant: operator uids of the first INSERT carry no prefix and those of the n-th (n > 0)
//! carry `in-`, so that a pipeline's state keeps its names when INSERTs are added after it, and
//! two INSERTs reading the same table never share a uid.

use crate::PipelineOptions;
use crate::connectors::{self, SinkKind};
use crate::error::{Result, SqlError};
use crate::planner::{InsertPlan, Step};
use keel_connectors::nexmark::NexmarkSource;
use keel_connectors::{BlackholeSink, FileSink, PrintSink, TopicSink, TopicSource, TopicSourceConfig};
use keel_log::Log;
use keel_runtime::ops::{Filter, Projection, WindowAggregate, WindowAssigner, WindowTopN};
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

/// One INSERT of a pipeline, ready to become stages.
pub(crate) struct InsertBuilder<'a> {
    pub ins: &'a InsertPlan,
    pub opts: &'a PipelineOptions,
    pub prefix: String,
}

impl InsertBuilder<'_> {
    /// DataFusion's logical plan of the query.
    pub(crate) fn explain(&self) -> String {
        use std::fmt::Write;
        let ins = self.ins;
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
                if ins.top_n.is_none() {
                    stage0.push(sink.clone());
                }
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
                if ins.top_n.is_none() {
                    stage1.push(sink.clone());
                }
                let _ = writeln!(s, "  stage 1 x{p}: {}", stage1.join(" -> "));
            }
        }
        if let Some(t) = &ins.top_n {
            let _ = writeln!(s, "    exchange: hash by the ROW_NUMBER() partition columns {:?}", t.partition_cols);
            let mut last = vec!["window top-n (numbers each window partition when the window closes)".to_string()];
            last.extend(ins.after_top_n.iter().map(describe_step));
            last.push(sink);
            let _ = writeln!(s, "  last stage x{p}: {}", last.join(" -> "));
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
        match &self.ins.source_plan {
            connectors::SourcePlan::Nexmark(c) => c.events.is_some(),
            connectors::SourcePlan::Datagen(d) => d.rows.is_some(),
            connectors::SourcePlan::Files(f) => f.monitor_interval.is_none(),
            connectors::SourcePlan::Topic { .. } => false,
        }
    }

    /// Checks that the sources can be read (topics exist, generator columns match) before any
    /// job state is created.
    pub(crate) fn check_sources(&self) -> Result<()> {
        match &self.ins.source_plan {
            connectors::SourcePlan::Topic { topic, .. } => {
                Log::open(&self.opts.data_dir)?.topic(topic)?;
            }
            connectors::SourcePlan::Nexmark(_) => {
                let schema = self.stored_schema();
                keel_connectors::nexmark::check_schema(&schema).map_err(|e| {
                    SqlError::invalid(self.ins.source.pos, format!("table {}: {e}", self.ins.source.name))
                })?;
            }
            connectors::SourcePlan::Files(f) => {
                if self.ins.source_computed.is_some() {
                    return Err(SqlError::unsupported(
                        self.ins.source.pos,
                        "computed columns on a filesystem table",
                        None,
                    ));
                }
                if !f.path.exists() {
                    return Err(SqlError::invalid(
                        self.ins.source.pos,
                        format!("table {}: path {} does not exist", self.ins.source.name, f.path.display()),
                    ));
                }
            }
            connectors::SourcePlan::Datagen(_) => {
                if self.ins.source_computed.is_some() {
                    return Err(SqlError::unsupported(
                        self.ins.source.pos,
                        "computed columns on a datagen table",
                        None,
                    ));
                }
                keel_connectors::datagen::check_schema(&self.stored_schema()).map_err(|e| {
                    SqlError::invalid(self.ins.source.pos, format!("table {}: {e}", self.ins.source.name))
                })?;
            }
        }
        Ok(())
    }

    /// The source's columns as stored or generated (without computed columns).
    fn stored_schema(&self) -> arrow::datatypes::SchemaRef {
        let ins = self.ins;
        ins.source_computed.as_ref().map(|c| c.base.clone()).unwrap_or_else(|| ins.source_schema.clone())
    }

    /// The event-time column (in the table's schema) and the watermark delay.
    fn event_time(&self) -> Option<(usize, i64)> {
        let src = &self.ins.source;
        src.watermark
            .as_ref()
            .and_then(|w| src.columns.iter().position(|c| c.name == w.column).map(|i| (i, w.delay_ms)))
    }

    /// The source stage's input: resolves topic offsets (recorded at the first start) or the
    /// generator's settings.
    fn source_input(&self, job: &mut JobDir) -> Result<StageInput> {
        let ins = self.ins;
        let uid = format!("{}source-{}", self.prefix, ins.source.name);
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
                    schema: self.stored_schema(),
                    event_time: self.event_time(),
                    files,
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
                    table: ins.source.name.clone(),
                    schema: self.stored_schema(),
                    event_time: self.event_time(),
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

    /// Resolves the source (recording start and bounded end offsets at the first start) and
    /// builds this INSERT's stages; `first_stage` is the index its first stage will have.
    pub(crate) fn stages(&self, job: &mut JobDir, first_stage: usize) -> Result<Vec<StageSpec>> {
        let ins = self.ins;
        let log = Log::open(&self.opts.data_dir)?;
        if let SinkKind::Topic { topic } = &ins.sink_kind {
            log.topic_or_create(topic, keel_log::TopicConfig::new(1))?;
        }
        let source = self.source_input(job)?;
        let p = self.opts.parallelism;
        let mut chain0 = vec![];
        if let Some((spec, col, schema)) = &ins.window {
            let (spec, col, schema) = (*spec, *col, schema.clone());
            chain0.push(op(format!("{}window-assigner", self.prefix), move || {
                Ok(Box::new(WindowAssigner { spec, time_column: col, schema: schema.clone() }))
            }));
        }
        chain0.extend(step_ops(&ins.below, &format!("{}pre", self.prefix)));
        // The sink ends the last stage: the Top-N stage when there is one.
        let mut sink = Some(self.sink_op());
        let mut last_sink = |chain: &mut Vec<OperatorSpec>, here: bool| {
            if here && let Some(s) = sink.take() {
                chain.push(s);
            }
        };
        let no_top_n = ins.top_n.is_none();
        let mut stages = vec![];
        match &ins.aggregate {
            None => {
                last_sink(&mut chain0, no_top_n);
                stages.push(StageSpec {
                    name: format!("{} -> {}", ins.source.name, ins.sink.name),
                    parallelism: p,
                    input: source,
                    chain: chain0,
                });
            }
            Some(agg) => {
                let (exprs, schema) = agg.pre_projection.clone();
                chain0.push(op(format!("{}aggregate-input", self.prefix), move || {
                    Ok(Box::new(Projection { exprs: exprs.clone(), schema: schema.clone() }))
                }));
                stages.push(StageSpec {
                    name: format!("{} scan", ins.source.name),
                    parallelism: p,
                    input: source,
                    chain: chain0,
                });
                let mut spec = agg.spec.as_ref().clone();
                if let Some(topic) = connectors::late_records(&ins.source, &self.opts.job)? {
                    let log = Log::open(&self.opts.data_dir)?;
                    log.topic_or_create(&topic, keel_log::TopicConfig::new(1))?;
                    let (data_dir, table, uid) = (
                        self.opts.data_dir.clone(),
                        ins.source.name.clone(),
                        format!("{}window-aggregate-late", self.prefix),
                    );
                    spec.late_output = Some(keel_runtime::SideOutputFactory(Arc::new(move |ctx, restored| {
                        let t = Log::open(&data_dir)
                            .and_then(|l| l.topic(&topic))
                            .map_err(keel_connectors::ConnectorError::from)?;
                        let writer = keel_connectors::staging::StagedTopicWriter::for_task(t, ctx, &uid, restored)?;
                        Ok(Box::new(keel_connectors::staging::DeadLetterOutput { table: table.clone(), writer })
                            as Box<dyn keel_runtime::SideOutput>)
                    })));
                }
                let spec = Arc::new(spec);
                let mut chain1 = vec![op(format!("{}window-aggregate", self.prefix), move || {
                    Ok(Box::new(WindowAggregate::new(spec.clone())?))
                })];
                chain1.extend(step_ops(&ins.above, &format!("{}post", self.prefix)));
                last_sink(&mut chain1, no_top_n);
                stages.push(StageSpec {
                    name: format!("window aggregate -> {}", ins.sink.name),
                    parallelism: p,
                    input: StageInput::Upstream {
                        stage: first_stage,
                        partitioning: Partitioning::Hash((0..agg.spec.num_keys).collect()),
                    },
                    chain: chain1,
                });
            }
        }
        if let Some(topn) = &ins.top_n {
            let upstream = first_stage + stages.len() - 1;
            let spec = topn.clone();
            let mut chain =
                vec![op(format!("{}window-top-n", self.prefix), move || Ok(Box::new(WindowTopN::new(spec.clone()))))];
            chain.extend(step_ops(&ins.after_top_n, &format!("{}top-n", self.prefix)));
            last_sink(&mut chain, true);
            stages.push(StageSpec {
                name: format!("window top-n -> {}", ins.sink.name),
                parallelism: p,
                input: StageInput::Upstream {
                    stage: upstream,
                    partitioning: Partitioning::Hash(topn.partition_cols.clone()),
                },
                chain,
            });
        }
        Ok(stages)
    }

    fn sink_op(&self) -> OperatorSpec {
        let name = self.ins.sink.name.clone();
        let uid = format!("{}sink-{name}", self.prefix);
        let data_dir = self.opts.data_dir.clone();
        match self.ins.sink_kind.clone() {
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
