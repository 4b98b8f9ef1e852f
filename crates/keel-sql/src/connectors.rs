//! Connector options from `CREATE TABLE ... WITH (...)`: which connector, its settings, and
//! checks that name the offending option and list the accepted ones; and the sink operator of
//! each kind of sink.
//!
//! Invariant: a sink kind that `accepts_updates` writes changelogs (batches ending in `_op`)
//! faithfully; the others write append-only output and refuse a changelog at run time, so the
//! planner must route updating results only to the former (with `update_hint` as the advice).

use crate::error::{Result, SqlError};
use crate::script::TableDef;
use keel_connectors::{
    BadRecordPolicy, BlackholeSink, FileFormat, FileSink, Partitioning, PrintSink, TopicFormat, TopicSink,
    UpsertTopicSink,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a table is read.
#[derive(Debug, Clone)]
pub enum SourcePlan {
    Topic {
        topic: String,
        bad_records: BadRecordPolicy,
        startup_latest: bool,
        idle_timeout: Option<Duration>,
    },
    /// The generator's settings; schema, computed columns and event time are filled in later.
    Nexmark(keel_connectors::nexmark::NexmarkConfig),
    /// Random rows; schema and event time are filled in later.
    Datagen(keel_connectors::datagen::DatagenConfig),
    /// Files under a path; schema, event time and the bounded file list are filled in later.
    Files(keel_connectors::file_source::FileSourceConfig),
}

/// How a table is written.
#[derive(Debug, Clone)]
pub enum SinkKind {
    Topic {
        topic: String,
    },
    Filesystem {
        path: PathBuf,
        format: FileFormat,
        /// `PARTITIONED BY`: rows go to Hive-style partition directories under `path`.
        partitioning: Option<Partitioning>,
    },
    Print,
    /// Discards every row (for benchmarks and tests).
    Blackhole,
    /// A topic of Flink's debezium-json change envelopes (`'format' = 'debezium-json'`).
    DebeziumTopic {
        topic: String,
    },
    /// A topic of keyed upserts and tombstones (`'connector' = 'upsert-topic'`), keyed by the
    /// table's primary-key columns.
    UpsertTopic {
        topic: String,
        key: Vec<String>,
    },
}

impl SinkKind {
    /// The delivery guarantee, in the words the CLI prints.
    pub fn guarantee(&self) -> &'static str {
        match self {
            SinkKind::Topic { .. } => "exactly-once (transactional commit on each checkpoint)",
            SinkKind::Filesystem { .. } => "exactly-once (files published on each checkpoint)",
            SinkKind::Blackhole => "none needed (discards every row)",
            SinkKind::Print => {
                "at-least-once (rows printed after the last checkpoint are printed again after a restart)"
            }
            SinkKind::DebeziumTopic { .. } => "exactly-once (transactional commit of the changes on each checkpoint)",
            SinkKind::UpsertTopic { .. } => {
                "exactly-once (transactional commit of the upserts and tombstones on each checkpoint)"
            }
        }
    }

    /// True when the sink can write updating results (a changelog with updates and deletes).
    pub fn accepts_updates(&self) -> bool {
        match self {
            SinkKind::Topic { .. } => false,
            SinkKind::Filesystem { format, .. } => format.accepts_updates(),
            SinkKind::Print | SinkKind::Blackhole | SinkKind::DebeziumTopic { .. } | SinkKind::UpsertTopic { .. } => {
                true
            }
        }
    }

    /// What to use instead of this append-only sink for an updating result; empty for a sink
    /// that accepts updates.
    pub fn update_hint(&self) -> &'static str {
        match self {
            SinkKind::Topic { .. } => "use 'format' = 'debezium-json' or 'connector' = 'upsert-topic'",
            SinkKind::Filesystem { .. } if !self.accepts_updates() => "use 'format' = 'debezium-json'",
            _ => "",
        }
    }
}

/// The operator writing table `table` for a sink of kind `kind`; `uid` names its state and
/// staged transactions, `data_dir` holds the topics.
pub fn sink_operator(kind: &SinkKind, table: &str, uid: String, data_dir: PathBuf) -> keel_runtime::OperatorFactory {
    let table = table.to_string();
    match kind.clone() {
        SinkKind::Topic { topic } => Arc::new(move |_ctx| {
            Ok(Box::new(TopicSink::new(data_dir.clone(), topic.clone(), uid.clone()))
                as Box<dyn keel_runtime::Operator>)
        }),
        SinkKind::DebeziumTopic { topic } => Arc::new(move |_ctx| {
            Ok(Box::new(
                TopicSink::new(data_dir.clone(), topic.clone(), uid.clone()).with_format(TopicFormat::DebeziumJson),
            ))
        }),
        SinkKind::UpsertTopic { topic, key } => Arc::new(move |_ctx| {
            Ok(Box::new(UpsertTopicSink::new(data_dir.clone(), topic.clone(), uid.clone(), key.clone())))
        }),
        SinkKind::Filesystem { path, format, partitioning } => Arc::new(move |_ctx| {
            let sink = FileSink::new(path.clone(), format).for_table(table.clone());
            Ok(Box::new(match &partitioning {
                Some(p) => sink.partitioned(p.clone()),
                None => sink,
            }))
        }),
        SinkKind::Print => Arc::new(move |_ctx| Ok(Box::new(PrintSink { table: table.clone() }))),
        SinkKind::Blackhole => Arc::new(|_ctx| Ok(Box::new(BlackholeSink::default()))),
    }
}

const TOPIC_KEYS: &[&str] = &[
    "connector",
    "late-records",
    "topic",
    "format",
    "bad-records",
    "dead-letter.topic",
    "scan.startup.mode",
    "scan.idle-timeout",
    "json.timestamp-format.standard",
    "json.ignore-parse-errors",
];
const NEXMARK_KEYS: &[&str] = &[
    "connector",
    "events.num",
    "first-event.rate",
    "next-event.rate",
    "splits",
    "out-of-order.group-size",
    "seed",
    "rows-per-batch",
];
const FS_KEYS: &[&str] = &[
    "connector",
    "path",
    "format",
    "json.timestamp-format.standard",
    "partition.default-name",
    "sink.partition-commit.trigger",
    "sink.partition-commit.policy.kind",
    "sink.partition-commit.success-file.name",
];
const UPSERT_TOPIC_KEYS: &[&str] =
    &["connector", "topic", "format", "key.format", "value.format", "json.timestamp-format.standard"];
const PRINT_KEYS: &[&str] = &["connector", "print-identifier"];
const BLACKHOLE_KEYS: &[&str] = &["connector"];

pub(crate) fn check_keys(def: &TableDef, connector: &str, allowed: &[&str]) -> Result<()> {
    for (k, _, pos) in &def.options {
        if !allowed.contains(&k.as_str()) {
            return Err(SqlError::invalid(
                *pos,
                format!(
                    "table {}: unknown option '{k}' for connector '{connector}'; accepted: {}",
                    def.name,
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn option_pos(def: &TableDef, key: &str) -> crate::error::Pos {
    def.options.iter().find(|o| o.0 == key).map(|o| o.2).unwrap_or(def.pos)
}

fn connector(def: &TableDef) -> Result<&str> {
    def.option("connector").ok_or_else(|| {
        SqlError::invalid(
            def.pos,
            format!("table {} has no 'connector' option; use 'topic', 'filesystem', 'print' or 'blackhole'", def.name),
        )
    })
}

fn json_format(def: &TableDef, what: &str, allowed: &[&str]) -> Result<String> {
    let f = def.option("format").unwrap_or("json").to_string();
    if !allowed.contains(&f.as_str()) {
        return Err(SqlError::unsupported(
            option_pos(def, "format"),
            format!("format '{f}' for {what}"),
            Some(&format!("use {}", allowed.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" or "))),
        ));
    }
    if let Some(std) = def.option("json.timestamp-format.standard")
        && std != "ISO-8601"
        && std != "SQL"
    {
        return Err(SqlError::invalid(
            option_pos(def, "json.timestamp-format.standard"),
            "'json.timestamp-format.standard' is 'ISO-8601' or 'SQL'",
        ));
    }
    Ok(f)
}

/// 'bad-records' (default 'dead-letter'), 'dead-letter.topic' (default `JOB-dead-letter`) and the
/// format's 'ignore-parse-errors' option (`ignore_key`; 'true' means 'skip' unless 'bad-records'
/// says 'fail'), shared by the topic and filesystem sources.
fn bad_record_policy(def: &TableDef, job: &str, ignore_key: &str) -> Result<BadRecordPolicy> {
    let ignore = def.option(ignore_key) == Some("true");
    Ok(match (def.option("bad-records"), ignore) {
        (None, true) | (Some("skip"), _) => BadRecordPolicy::Skip,
        (None | Some("dead-letter"), false) => BadRecordPolicy::DeadLetter {
            topic: def.option("dead-letter.topic").map(str::to_string).unwrap_or_else(|| format!("{job}-dead-letter")),
        },
        (Some("dead-letter"), true) => BadRecordPolicy::Skip,
        (Some("fail"), _) => BadRecordPolicy::Fail,
        (Some(other), _) => {
            return Err(SqlError::invalid(
                option_pos(def, "bad-records"),
                format!("'bad-records' = '{other}' is not one of 'dead-letter', 'skip', 'fail'"),
            ));
        }
    })
}

/// The source plan of a table read by a query.
pub fn source_plan(def: &TableDef, job: &str) -> Result<SourcePlan> {
    if !def.partition_by.is_empty() {
        return Err(SqlError::unsupported(
            def.pos,
            format!("reading table {} (PARTITIONED BY)", def.name),
            Some("a partitioned filesystem table can be written; declare an unpartitioned table to read files"),
        ));
    }
    match connector(def)? {
        "topic" => {
            check_keys(def, "topic", TOPIC_KEYS)?;
            json_format(def, "a topic", &["json"])?;
            let topic = def
                .option("topic")
                .ok_or_else(|| {
                    SqlError::invalid(
                        def.pos,
                        format!("table {} needs a 'topic' option naming the topic to read", def.name),
                    )
                })?
                .to_string();
            let bad_records = bad_record_policy(def, job, "json.ignore-parse-errors")?;
            let startup_latest = match def.option("scan.startup.mode").unwrap_or("earliest-offset") {
                "earliest-offset" => false,
                "latest-offset" => true,
                other => {
                    return Err(SqlError::invalid(
                        option_pos(def, "scan.startup.mode"),
                        format!("'scan.startup.mode' = '{other}' is not one of 'earliest-offset', 'latest-offset'"),
                    ));
                }
            };
            let idle_timeout = match def.option("scan.idle-timeout").unwrap_or("5s") {
                "none" | "0" => None,
                d => Some(
                    keel_types::time::parse_duration(d)
                        .map_err(|e| SqlError::invalid(option_pos(def, "scan.idle-timeout"), e.to_string()))?,
                ),
            };
            Ok(SourcePlan::Topic { topic, bad_records, startup_latest, idle_timeout })
        }
        "nexmark" => {
            check_keys(def, "nexmark", NEXMARK_KEYS)?;
            let num = |key: &str, default: Option<u64>| -> Result<Option<u64>> {
                match def.option(key) {
                    None => Ok(default),
                    Some(v) => v.replace('_', "").parse::<u64>().map(Some).map_err(|_| {
                        SqlError::invalid(option_pos(def, key), format!("'{key}' = '{v}' is not a whole number"))
                    }),
                }
            };
            let rate = num("first-event.rate", Some(10_000_000))?.unwrap_or(10_000_000).max(1);
            if num("next-event.rate", Some(rate))? != Some(rate) {
                return Err(SqlError::unsupported(
                    option_pos(def, "next-event.rate"),
                    "a 'next-event.rate' different from 'first-event.rate'",
                    Some("use one rate"),
                ));
            }
            let splits = num("splits", Some(8))?.unwrap_or(8);
            if splits == 0 || splits > 4096 {
                return Err(SqlError::invalid(option_pos(def, "splits"), "'splits' is between 1 and 4096"));
            }
            Ok(SourcePlan::Nexmark(keel_connectors::nexmark::NexmarkConfig {
                table: def.name.clone(),
                events: num("events.num", None)?,
                rate,
                splits: splits as u32,
                out_of_order_group: num("out-of-order.group-size", Some(1))?.unwrap_or(1).max(1),
                seed: num("seed", Some(0))?.unwrap_or(0),
                base_time_ms: 1_704_067_200_000,
                batch_size: crate::generators::rows_per_batch(def)?,
                schema: std::sync::Arc::new(arrow::datatypes::Schema::empty()),
                computed: None,
                event_time: None,
                event_types: None,
            }))
        }
        "datagen" => crate::generators::datagen_plan(def),
        "filesystem" => {
            const KEYS: &[&str] = &[
                "connector",
                "path",
                "format",
                "source.monitor-interval",
                "csv.field-delimiter",
                "bad-records",
                "dead-letter.topic",
                "json.ignore-parse-errors",
                "csv.ignore-parse-errors",
                "json.timestamp-format.standard",
            ];
            check_keys(def, "filesystem", KEYS)?;
            let path = def.option("path").ok_or_else(|| {
                SqlError::invalid(
                    def.pos,
                    format!("table {} needs a 'path' option: the directory (or file) to read", def.name),
                )
            })?;
            let path = PathBuf::from(path.strip_prefix("file://").unwrap_or(path));
            let format = match json_format(def, "the filesystem connector", &["json", "csv", "parquet"])?.as_str() {
                "parquet" => keel_connectors::file_source::FileSourceFormat::Parquet,
                "csv" => {
                    let d = def.option("csv.field-delimiter").unwrap_or(",");
                    if d.len() != 1 {
                        return Err(SqlError::invalid(
                            option_pos(def, "csv.field-delimiter"),
                            "'csv.field-delimiter' is one character",
                        ));
                    }
                    keel_connectors::file_source::FileSourceFormat::Csv { delimiter: d.as_bytes()[0] }
                }
                _ => keel_connectors::file_source::FileSourceFormat::JsonLines,
            };
            let monitor_interval = match def.option("source.monitor-interval") {
                None => None,
                Some(d) => Some(
                    keel_types::time::parse_duration(d)
                        .map_err(|e| SqlError::invalid(option_pos(def, "source.monitor-interval"), e.to_string()))?,
                ),
            };
            let bad_records = match format {
                keel_connectors::file_source::FileSourceFormat::Parquet => {
                    if let Some(key) =
                        ["bad-records", "dead-letter.topic"].into_iter().find(|k| def.option(k).is_some())
                    {
                        return Err(SqlError::unsupported(
                            option_pos(def, key),
                            format!("'{key}' for Parquet files"),
                            Some(
                                "Parquet columns are checked against the table when a file is opened; a mismatch fails the job",
                            ),
                        ));
                    }
                    BadRecordPolicy::Fail
                }
                keel_connectors::file_source::FileSourceFormat::Csv { .. } => {
                    bad_record_policy(def, job, "csv.ignore-parse-errors")?
                }
                keel_connectors::file_source::FileSourceFormat::JsonLines => {
                    bad_record_policy(def, job, "json.ignore-parse-errors")?
                }
            };
            Ok(SourcePlan::Files(keel_connectors::file_source::FileSourceConfig {
                table: def.name.clone(),
                path,
                format,
                schema: std::sync::Arc::new(arrow::datatypes::Schema::empty()),
                event_time: None,
                files: None,
                monitor_interval,
                bad_records,
                // The first INSERT's source uid; see FileSourceConfig::uid.
                uid: format!("source-{}", def.name),
            }))
        }
        "print" => Err(SqlError::invalid(
            option_pos(def, "connector"),
            format!("table {} uses the print connector, which can only be written", def.name),
        )),
        "upsert-topic" => Err(SqlError::unsupported(
            option_pos(def, "connector"),
            format!("reading table {} (connector 'upsert-topic')", def.name),
            Some("upsert topics can be written; inspect one with `keel consume TOPIC --materialize`"),
        )),
        other => Err(unknown_connector(def, other)),
    }
}

/// Where late rows of windows over this table go: `None` to be dropped ('drop', the default),
/// or the dead-letter topic ('dead-letter').
pub fn late_records(def: &TableDef, job: &str) -> Result<Option<String>> {
    match def.option("late-records") {
        None | Some("drop") => Ok(None),
        Some("dead-letter") => Ok(Some(
            def.option("dead-letter.topic").map(str::to_string).unwrap_or_else(|| format!("{job}-dead-letter")),
        )),
        Some(other) => Err(SqlError::invalid(
            option_pos(def, "late-records"),
            format!("'late-records' = '{other}' is not one of 'drop', 'dead-letter'"),
        )),
    }
}

fn unknown_connector(def: &TableDef, other: &str) -> SqlError {
    SqlError::unsupported(
        option_pos(def, "connector"),
        format!("connector '{other}'"),
        Some("use 'topic', 'filesystem', 'print' or 'blackhole'"),
    )
}

/// How a table written by an INSERT is written.
pub fn sink_kind(def: &TableDef) -> Result<SinkKind> {
    if !def.partition_by.is_empty() && connector(def)? != "filesystem" {
        return Err(SqlError::unsupported(
            def.pos,
            format!("PARTITIONED BY on table {} (connector '{}')", def.name, connector(def)?),
            Some("only the 'filesystem' connector writes partitions"),
        ));
    }
    match connector(def)? {
        "topic" => {
            check_keys(def, "topic", TOPIC_KEYS)?;
            let format = json_format(def, "a topic", &["json", "debezium-json"])?;
            let topic = sink_topic(def)?;
            Ok(match format.as_str() {
                "debezium-json" => SinkKind::DebeziumTopic { topic },
                _ => SinkKind::Topic { topic },
            })
        }
        "upsert-topic" => {
            check_keys(def, "upsert-topic", UPSERT_TOPIC_KEYS)?;
            for key in ["format", "key.format", "value.format"] {
                if let Some(f) = def.option(key)
                    && f != "json"
                {
                    return Err(SqlError::unsupported(
                        option_pos(def, key),
                        format!("'{key}' = '{f}' for an upsert topic"),
                        Some("keys and values of an upsert topic are 'json'"),
                    ));
                }
            }
            json_format(def, "an upsert topic", &["json"])?;
            let topic = sink_topic(def)?;
            let key = def.primary_key.clone().ok_or_else(|| {
                SqlError::invalid(
                    def.pos,
                    format!(
                        "table {} uses the upsert-topic connector, which keys records by the primary key; \
                         declare `PRIMARY KEY (column, ...) NOT ENFORCED`",
                        def.name
                    ),
                )
            })?;
            if let Some(missing) = key.iter().find(|k| !def.columns.iter().any(|c| &c.name == *k)) {
                return Err(SqlError::invalid(
                    def.pos,
                    format!("table {}: PRIMARY KEY column {missing} is not a column of the table", def.name),
                ));
            }
            Ok(SinkKind::UpsertTopic { topic, key })
        }
        "filesystem" => {
            check_keys(def, "filesystem", FS_KEYS)?;
            let format = match json_format(def, "the filesystem connector", &["json", "csv", "debezium-json"])?.as_str()
            {
                "csv" => FileFormat::Csv,
                "debezium-json" => FileFormat::DebeziumJson,
                _ => FileFormat::Json,
            };
            let path = def.option("path").ok_or_else(|| {
                SqlError::invalid(
                    def.pos,
                    format!("table {} needs a 'path' option: the directory to write files in", def.name),
                )
            })?;
            let path = PathBuf::from(path.strip_prefix("file://").unwrap_or(path));
            check_sink_dir(def, &path)?;
            Ok(SinkKind::Filesystem { path, format, partitioning: partitioning(def)? })
        }
        "print" => {
            check_keys(def, "print", PRINT_KEYS)?;
            Ok(SinkKind::Print)
        }
        "blackhole" => {
            check_keys(def, "blackhole", BLACKHOLE_KEYS)?;
            Ok(SinkKind::Blackhole)
        }
        other => Err(SqlError::unsupported(
            option_pos(def, "connector"),
            format!("connector '{other}'"),
            Some("use 'topic', 'filesystem', 'print' or 'blackhole', or 'upsert-topic' for keyed updates"),
        )),
    }
}

/// Refuses a filesystem sink 'path' that is a file, or lies under one: the sink writes files
/// into a directory, and would otherwise fail (a user error) when the job starts writing.
fn check_sink_dir(def: &TableDef, path: &std::path::Path) -> Result<()> {
    for p in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(SqlError::invalid(
                    option_pos(def, "path"),
                    format!(
                        "table {}: 'path' = '{}': {} is a file, not a directory; the filesystem sink writes its \
                         files into a directory, so name a directory (it is created if missing)",
                        def.name,
                        path.display(),
                        p.display()
                    ),
                ));
            }
            // Not there (or not readable): it is created, or fails then, naming the path.
            Err(_) => {}
        }
    }
    Ok(())
}

/// `PARTITIONED BY` of a filesystem sink table with its partition options: Flink's
/// 'partition.default-name' and the 'success-file' commit policy (committed when the checkpoint
/// publishing a partition's files completes: Flink's 'process-time' trigger without delay).
fn partitioning(def: &TableDef) -> Result<Option<Partitioning>> {
    let opt = |key: &str| def.option(key).map(|v| (v, option_pos(def, key)));
    if def.partition_by.is_empty() {
        if let Some((key, _, pos)) =
            def.options.iter().find(|o| o.0.starts_with("partition.") || o.0.starts_with("sink.partition-commit."))
        {
            let message = format!("table {}: '{key}' applies to a table with PARTITIONED BY (column, ...)", def.name);
            return Err(SqlError::invalid(*pos, message));
        }
        return Ok(None);
    }
    if def.partition_by.len() == def.columns.len() {
        let message = format!("table {}: every column is a partition column; the files would have none", def.name);
        return Err(SqlError::invalid(def.pos, message));
    }
    if let Some((t, pos)) = opt("sink.partition-commit.trigger").filter(|(t, _)| *t != "process-time") {
        let hint = "partitions commit when the checkpoint publishing their files completes ('process-time')";
        return Err(SqlError::unsupported(pos, format!("'sink.partition-commit.trigger' = '{t}'"), Some(hint)));
    }
    let success_name = opt("sink.partition-commit.success-file.name");
    let success_file = match (opt("sink.partition-commit.policy.kind"), success_name) {
        (Some((kinds, pos)), _) => {
            if let Some(kind) = kinds.split(',').map(str::trim).find(|k| *k != "success-file") {
                let what = format!("partition commit policy '{kind}'");
                return Err(SqlError::unsupported(pos, what, Some("use 'success-file'")));
            }
            Some(success_name.map_or(keel_connectors::partitioned::SUCCESS_FILE_NAME, |n| n.0).to_string())
        }
        (None, Some((_, pos))) => {
            let message = "'sink.partition-commit.success-file.name' needs 'sink.partition-commit.policy.kind'";
            return Err(SqlError::invalid(pos, format!("{message} = 'success-file'")));
        }
        (None, None) => None,
    };
    for key in ["partition.default-name", "sink.partition-commit.success-file.name"] {
        if let Some((v, pos)) = opt(key).filter(|(v, _)| v.trim().is_empty() || v.contains('/') || v.starts_with('.')) {
            return Err(SqlError::invalid(pos, format!("'{key}' = '{v}' is not a file name")));
        }
    }
    let p = Partitioning::new(def.partition_by.clone()).with_success_file(success_file);
    Ok(Some(match def.option("partition.default-name") {
        Some(name) => p.with_default_name(name),
        None => p,
    }))
}

/// The 'topic' option of a sink table.
fn sink_topic(def: &TableDef) -> Result<String> {
    def.option("topic").map(str::to_string).ok_or_else(|| {
        SqlError::invalid(def.pos, format!("table {} needs a 'topic' option naming the topic to write", def.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generators::MAX_ROWS_PER_BATCH;
    use crate::script::{parse_create_table, split_statements, tokenize};

    fn table(sql: &str) -> TableDef {
        parse_create_table(&split_statements(tokenize(sql).unwrap())[0]).unwrap()
    }

    fn sink(sql: &str) -> Result<SinkKind> {
        sink_kind(&table(sql))
    }

    #[test]
    fn changelog_sinks_are_parsed_and_accept_updates() {
        let k = sink("CREATE TABLE t (a INT) WITH ('connector' = 'topic', 'topic' = 'x', 'format' = 'debezium-json')");
        assert!(matches!(&k, Ok(SinkKind::DebeziumTopic { topic }) if topic == "x"), "{k:?}");
        let k = sink("CREATE TABLE t (a INT, b INT, PRIMARY KEY (b, a) NOT ENFORCED) WITH ('connector' = 'upsert-topic', 'topic' = 'u', 'value.format' = 'json')").unwrap();
        assert!(matches!(&k, SinkKind::UpsertTopic { topic, key } if topic == "u" && key == &["b", "a"]), "{k:?}");
        assert!(k.accepts_updates() && k.update_hint().is_empty());
        assert!(k.guarantee().starts_with("exactly-once"));
        let k =
            sink("CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '/o', 'format' = 'debezium-json')")
                .unwrap();
        assert!(matches!(k, SinkKind::Filesystem { format: FileFormat::DebeziumJson, .. }));
        assert!(k.accepts_updates());
        for append_only in [
            "CREATE TABLE t (a INT) WITH ('connector' = 'topic', 'topic' = 'x')",
            "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '/o', 'format' = 'csv')",
        ] {
            let k = sink(append_only).unwrap();
            assert!(!k.accepts_updates(), "{k:?}");
            assert!(k.update_hint().contains("'format' = 'debezium-json'"), "{}", k.update_hint());
        }
        assert!(
            sink("CREATE TABLE t (a INT) WITH ('connector' = 'topic', 'topic' = 'x')")
                .unwrap()
                .update_hint()
                .contains("'connector' = 'upsert-topic'")
        );
        assert!(sink("CREATE TABLE t (a INT) WITH ('connector' = 'print')").unwrap().accepts_updates());
        assert!(sink("CREATE TABLE t (a INT) WITH ('connector' = 'blackhole')").unwrap().accepts_updates());
    }

    #[test]
    fn upsert_topics_need_a_primary_key_of_their_columns() {
        let err = sink("CREATE TABLE t (\n a INT) WITH ('connector' = 'upsert-topic', 'topic' = 'u')").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("line 1, column 14:"), "{msg}");
        assert!(msg.contains("declare `PRIMARY KEY (column, ...) NOT ENFORCED`"), "{msg}");
        let err = sink(
            "CREATE TABLE t (a INT, PRIMARY KEY (z) NOT ENFORCED) WITH ('connector' = 'upsert-topic', 'topic' = 'u')",
        )
        .unwrap_err();
        assert!(err.to_string().contains("PRIMARY KEY column z is not a column"), "{err}");
        let err = sink("CREATE TABLE t (a INT, PRIMARY KEY (a) NOT ENFORCED) WITH ('connector' = 'upsert-topic', 'topic' = 'u', 'key.format' = 'avro')")
            .unwrap_err();
        assert!(err.to_string().contains("'key.format' = 'avro' for an upsert topic is not supported"), "{err}");
        let err = sink("CREATE TABLE t (a INT, PRIMARY KEY (a) NOT ENFORCED) WITH ('connector' = 'upsert-topic')")
            .unwrap_err();
        assert!(err.to_string().contains("needs a 'topic' option"), "{err}");
        let err =
            sink("CREATE TABLE t (a INT) WITH ('connector' = 'topic', 'topic' = 'x', 'format' = 'avro')").unwrap_err();
        assert!(err.to_string().contains("use 'json' or 'debezium-json'"), "{err}");
        // Reading either changelog form is refused (no changelog sources yet).
        let err = source_plan(&table("CREATE TABLE t (a INT, PRIMARY KEY (a) NOT ENFORCED) WITH ('connector' = 'upsert-topic', 'topic' = 'u')"), "j")
            .unwrap_err();
        assert!(err.to_string().contains("keel consume TOPIC --materialize"), "{err}");
        let err = source_plan(
            &table("CREATE TABLE t (a INT) WITH ('connector' = 'topic', 'topic' = 'x', 'format' = 'debezium-json')"),
            "j",
        )
        .unwrap_err();
        assert!(err.to_string().contains("format 'debezium-json' for a topic is not supported"), "{err}");
    }

    #[test]
    fn a_filesystem_sink_path_that_is_a_file_is_refused_at_its_option() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("taken.txt");
        std::fs::write(&file, "x").unwrap();
        for path in [file.clone(), file.join("below")] {
            let sql =
                format!("CREATE TABLE t (a INT) WITH ('connector' = 'filesystem',\n 'path' = '{}')", path.display());
            let err = sink(&sql).unwrap_err().to_string();
            assert!(err.starts_with("line 2, column 2:"), "{err}");
            assert!(err.contains(&file.display().to_string()) && err.contains("is a file"), "{err}");
        }
        let fine = format!(
            "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '{}')",
            dir.path().join("new").display()
        );
        assert!(sink(&fine).is_ok());
    }

    #[test]
    fn generator_options_that_size_one_value_or_batch_are_bounded() {
        let datagen = |options: &str| {
            source_plan(
                &table(&format!("CREATE TABLE t (s VARCHAR, n BIGINT) WITH ('connector' = 'datagen'{options})")),
                "j",
            )
        };
        let err = datagen(", 'fields.s.length' = '4294967296'").unwrap_err().to_string();
        let limit = keel_connectors::datagen::MAX_STRING_LENGTH.to_string();
        assert!(err.contains("'fields.s.length' = '4294967296'") && err.contains(&limit), "{err}");
        assert!(datagen(&format!(", 'fields.s.length' = '{limit}'")).is_ok());
        assert!(datagen(", 'fields.s.length' = '-1'").is_err());
        let rows = MAX_ROWS_PER_BATCH.to_string();
        let err = datagen(", 'rows-per-batch' = '1000000000'").unwrap_err().to_string();
        assert!(err.contains("'rows-per-batch'") && err.contains(&rows), "{err}");
        // Counts and rates may be large: they size no single value.
        assert!(datagen(", 'number-of-rows' = '1000000000000', 'rows-per-second' = '1000000000'").is_ok());
        let nexmark = source_plan(
            &table("CREATE TABLE t (a INT) WITH ('connector' = 'nexmark', 'rows-per-batch' = '1000000000')"),
            "j",
        );
        let err = nexmark.unwrap_err().to_string();
        assert!(err.contains("'rows-per-batch'") && err.contains(&rows), "{err}");
    }

    #[test]
    fn partitioned_filesystem_sinks_take_their_columns_and_commit_options() {
        const T: &str = "CREATE TABLE t (a BIGINT, dt STRING, hm STRING) PARTITIONED BY (dt, hm) WITH ('connector' = 'filesystem', 'path' = '/o', 'format' = 'csv'";
        let fs = |options: &str| sink(&format!("{T}{options})"));
        let k = fs("").unwrap();
        assert!(k.guarantee().starts_with("exactly-once"));
        let SinkKind::Filesystem { partitioning: Some(p), .. } = &k else { panic!("{k:?}") };
        assert_eq!(p, &Partitioning::new(vec!["dt".into(), "hm".into()]));
        let k = fs(", 'sink.partition-commit.policy.kind' = 'success-file', 'sink.partition-commit.trigger' = 'process-time', 'partition.default-name' = 'none'").unwrap();
        let SinkKind::Filesystem { partitioning: Some(p), .. } = &k else { panic!("{k:?}") };
        assert_eq!((p.success_file.as_deref(), p.default_name.as_str()), (Some("_SUCCESS"), "none"));
        let k = fs(
            ", 'sink.partition-commit.policy.kind' = 'success-file', 'sink.partition-commit.success-file.name' = '_DONE'",
        );
        assert!(
            matches!(&k, Ok(SinkKind::Filesystem { partitioning: Some(p), .. }) if p.success_file.as_deref() == Some("_DONE"))
        );
        let k = sink("CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '/o')").unwrap();
        assert!(matches!(k, SinkKind::Filesystem { partitioning: None, .. }));
        for (options, want) in [
            (
                ", 'sink.partition-commit.policy.kind' = 'metastore,success-file'",
                "policy 'metastore' is not supported; use 'success-file'",
            ),
            (
                ", 'sink.partition-commit.trigger' = 'partition-time'",
                "'sink.partition-commit.trigger' = 'partition-time' is not supported",
            ),
            (
                ", 'sink.partition-commit.success-file.name' = 'x'",
                "needs 'sink.partition-commit.policy.kind' = 'success-file'",
            ),
            (", 'partition.default-name' = 'a/b'", "'partition.default-name' = 'a/b' is not a file name"),
            (", 'sink.rolling-policy.file-size' = '1MB'", "unknown option 'sink.rolling-policy.file-size'"),
        ] {
            assert!(fs(options).unwrap_err().to_string().contains(want), "{options}: {:?}", fs(options));
        }
        for (sql, want) in [
            (
                "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '/o', 'partition.default-name' = 'x')",
                "line 1, column 73: table t: 'partition.default-name' applies to a table with PARTITIONED BY",
            ),
            (
                "CREATE TABLE t (dt STRING) PARTITIONED BY (dt) WITH ('connector' = 'filesystem', 'path' = '/o')",
                "every column is a partition column",
            ),
            (
                "CREATE TABLE t (a INT, b INT)\nPARTITIONED BY (b) WITH ('connector' = 'topic', 'topic' = 'x')",
                "line 1, column 14: PARTITIONED BY on table t (connector 'topic') is not supported; only the 'filesystem'",
            ),
        ] {
            assert!(sink(sql).unwrap_err().to_string().contains(want), "{sql}: {:?}", sink(sql));
        }
        let err = source_plan(&table(&format!("{T})")), "j").unwrap_err();
        assert!(err.to_string().contains("reading table t (PARTITIONED BY) is not supported"), "{err}");
    }
}
