//! Connector options from `CREATE TABLE ... WITH (...)`: which connector, its settings, and
//! checks that name the offending option and list the accepted ones.

use crate::error::{Result, SqlError};
use crate::script::TableDef;
use keel_connectors::{BadRecordPolicy, FileFormat};
use std::path::PathBuf;
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
    },
    Print,
    /// Discards every row (for benchmarks and tests).
    Blackhole,
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
        }
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
const FS_KEYS: &[&str] = &["connector", "path", "format", "json.timestamp-format.standard"];
const PRINT_KEYS: &[&str] = &["connector", "print-identifier"];
const BLACKHOLE_KEYS: &[&str] = &["connector"];

fn check_keys(def: &TableDef, connector: &str, allowed: &[&str]) -> Result<()> {
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

fn option_pos(def: &TableDef, key: &str) -> crate::error::Pos {
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

/// The source plan of a table read by a query.
pub fn source_plan(def: &TableDef, job: &str) -> Result<SourcePlan> {
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
            let ignore = def.option("json.ignore-parse-errors") == Some("true");
            let bad_records = match (def.option("bad-records"), ignore) {
                (None, true) | (Some("skip"), _) => BadRecordPolicy::Skip,
                (None | Some("dead-letter"), false) => BadRecordPolicy::DeadLetter {
                    topic: def
                        .option("dead-letter.topic")
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{job}-dead-letter")),
                },
                (Some("dead-letter"), true) => BadRecordPolicy::Skip,
                (Some("fail"), _) => BadRecordPolicy::Fail,
                (Some(other), _) => {
                    return Err(SqlError::invalid(
                        option_pos(def, "bad-records"),
                        format!("'bad-records' = '{other}' is not one of 'dead-letter', 'skip', 'fail'"),
                    ));
                }
            };
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
                batch_size: num("rows-per-batch", Some(8192))?.unwrap_or(8192).max(1) as usize,
                schema: std::sync::Arc::new(arrow::datatypes::Schema::empty()),
                computed: None,
                event_time: None,
            }))
        }
        "datagen" => datagen_plan(def),
        "filesystem" => {
            const KEYS: &[&str] = &[
                "connector",
                "path",
                "format",
                "source.monitor-interval",
                "csv.field-delimiter",
                "bad-records",
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
            let format = match json_format(def, "the filesystem connector", &["json", "csv"])?.as_str() {
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
            let bad_records = match def.option("bad-records").unwrap_or("fail") {
                "fail" => BadRecordPolicy::Fail,
                "skip" => BadRecordPolicy::Skip,
                other => {
                    return Err(SqlError::unsupported(
                        option_pos(def, "bad-records"),
                        format!("'bad-records' = '{other}' for files"),
                        Some("use 'fail' (the default for files) or 'skip'"),
                    ));
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
            }))
        }
        "print" => Err(SqlError::invalid(
            option_pos(def, "connector"),
            format!("table {} uses the print connector, which can only be written", def.name),
        )),
        other => Err(unknown_connector(def, other)),
    }
}

fn datagen_plan(def: &TableDef) -> Result<SourcePlan> {
    const KEYS: &[&str] =
        &["connector", "rows-per-second", "number-of-rows", "seed", "splits", "rows-per-batch", "start-time"];
    let mut fields = vec![keel_connectors::datagen::FieldOptions::default(); def.columns.len()];
    for (k, v, pos) in &def.options {
        if let Some(rest) = k.strip_prefix("fields.") {
            let (col, opt) = rest.rsplit_once('.').ok_or_else(|| {
                SqlError::invalid(*pos, format!("option '{k}': write fields.COLUMN.min|max|length|kind"))
            })?;
            let i = def.columns.iter().position(|c| c.name == col).ok_or_else(|| {
                SqlError::invalid(*pos, format!("option '{k}': table {} has no column {col}", def.name))
            })?;
            let num = || {
                v.parse::<f64>().map_err(|_| SqlError::invalid(*pos, format!("option '{k}' = '{v}' is not a number")))
            };
            match opt {
                "min" => fields[i].min = Some(num()?),
                "max" => fields[i].max = Some(num()?),
                "length" => fields[i].length = Some(num()? as usize),
                "kind" if v == "random" => {}
                "kind" => {
                    return Err(SqlError::unsupported(
                        *pos,
                        format!("'{k}' = '{v}'"),
                        Some("datagen generates 'random' values"),
                    ));
                }
                _ => {
                    return Err(SqlError::invalid(
                        *pos,
                        format!("unknown option '{k}'; per column: min, max, length, kind"),
                    ));
                }
            }
        } else if !KEYS.contains(&k.as_str()) {
            return Err(SqlError::invalid(
                *pos,
                format!(
                    "table {}: unknown option '{k}' for connector 'datagen'; accepted: {}, fields.COLUMN.min|max|length",
                    def.name,
                    KEYS.join(", ")
                ),
            ));
        }
    }
    let num = |key: &str, default: u64| -> Result<u64> {
        match def.option(key) {
            None => Ok(default),
            Some(v) => v
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| SqlError::invalid(option_pos(def, key), format!("'{key}' = '{v}' is not a whole number"))),
        }
    };
    let rows = match def.option("number-of-rows") {
        None => None,
        Some(_) => Some(num("number-of-rows", 0)?),
    };
    Ok(SourcePlan::Datagen(keel_connectors::datagen::DatagenConfig {
        table: def.name.clone(),
        schema: std::sync::Arc::new(arrow::datatypes::Schema::empty()),
        fields,
        rows,
        rate: num("rows-per-second", 10_000)?,
        seed: num("seed", 0)?,
        splits: num("splits", 4)?.clamp(1, 4096) as u32,
        start_ms: 1_704_067_200_000,
        event_time: None,
        batch_size: num("rows-per-batch", 8192)?.max(1) as usize,
    }))
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
    match connector(def)? {
        "topic" => {
            check_keys(def, "topic", TOPIC_KEYS)?;
            json_format(def, "a topic", &["json"])?;
            let topic = def.option("topic").ok_or_else(|| {
                SqlError::invalid(
                    def.pos,
                    format!("table {} needs a 'topic' option naming the topic to write", def.name),
                )
            })?;
            Ok(SinkKind::Topic { topic: topic.to_string() })
        }
        "filesystem" => {
            check_keys(def, "filesystem", FS_KEYS)?;
            let format = match json_format(def, "the filesystem connector", &["json", "csv"])?.as_str() {
                "csv" => FileFormat::Csv,
                _ => FileFormat::Json,
            };
            let path = def.option("path").ok_or_else(|| {
                SqlError::invalid(
                    def.pos,
                    format!("table {} needs a 'path' option: the directory to write files in", def.name),
                )
            })?;
            let path = path.strip_prefix("file://").unwrap_or(path);
            Ok(SinkKind::Filesystem { path: PathBuf::from(path), format })
        }
        "print" => {
            check_keys(def, "print", PRINT_KEYS)?;
            Ok(SinkKind::Print)
        }
        "blackhole" => {
            check_keys(def, "blackhole", BLACKHOLE_KEYS)?;
            Ok(SinkKind::Blackhole)
        }
        other => Err(unknown_connector(def, other)),
    }
}
