//! `keel topic`, `keel produce` and `keel consume`.
//!
//! Records have an optional key and a value. `produce` writes JSON values (keyed by a field with
//! `--key`, or `KEY SEP VALUE` lines with `--key-separator`, where an empty value is a tombstone);
//! `consume` prints values (a tombstone as `null`), or `KEY SEP VALUE` with `--key-separator`, or
//! with `--materialize` the table a changelog topic describes (see `materialize`).

use super::materialize::{Materialized, Position};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use keel_log::{Durability, Log, Record, TopicConfig};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

#[derive(Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Delete the oldest closed segments once a partition holds more than this many bytes.
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// Delete closed segments older than this (for example 7d, 12h).
        #[arg(long)]
        retention: Option<String>,
        /// Start a new segment file after this many bytes.
        #[arg(long, default_value_t = 64 << 20)]
        segment_bytes: u64,
    },
    /// List topics.
    List,
    /// Show a topic's partitions: offsets and sizes.
    Describe { name: String },
    /// Delete a topic and all its data.
    Delete { name: String },
}

pub fn topic(data_dir: &Path, args: TopicArgs) -> Result<()> {
    let log = Log::open(data_dir)?;
    match args.command {
        TopicCommand::Create { name, partitions, retention_bytes, retention, segment_bytes } => {
            let mut cfg = TopicConfig::new(partitions);
            cfg.segment_bytes = segment_bytes;
            cfg.retention_bytes = retention_bytes;
            cfg.retention_ms = match retention {
                Some(r) => Some(keel_types::time::parse_duration(&r)?.as_millis() as u64),
                None => None,
            };
            log.create_topic(&name, cfg)?;
            println!("created topic '{name}' with {partitions} partition(s)");
        }
        TopicCommand::List => {
            for name in log.list_topics()? {
                let t = log.topic(&name)?;
                let records: u64 = t.describe()?.iter().map(|p| p.end_offset - p.start_offset).sum();
                println!("{name}\t{} partition(s)\t{records} record(s)", t.partitions());
            }
        }
        TopicCommand::Describe { name } => {
            let t = log.topic(&name)?;
            let c = t.config();
            println!(
                "topic '{name}': {} partition(s), segment size {} bytes, retention {}, {}",
                c.partitions,
                c.segment_bytes,
                c.retention_bytes.map(|b| format!("{b} bytes")).unwrap_or_else(|| "unlimited by size".into()),
                c.retention_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "unlimited by age".into())
            );
            println!(
                "{:>9}  {:>14}  {:>14}  {:>14}  {:>8}",
                "partition", "start offset", "end offset", "bytes", "segments"
            );
            for p in t.describe()? {
                println!(
                    "{:>9}  {:>14}  {:>14}  {:>14}  {:>8}",
                    p.partition, p.start_offset, p.end_offset, p.size_bytes, p.segments
                );
            }
        }
        TopicCommand::Delete { name } => {
            log.delete_topic(&name)?;
            println!("deleted topic '{name}'");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ProduceArgs {
    /// The topic to append to.
    topic: String,
    /// Partition by the hash of this JSON field's value (round-robin without it).
    #[arg(long)]
    key: Option<String>,
    /// Read each line as KEY SEP VALUE: the record's key (empty: none; partitions by its hash) and
    /// its JSON value (empty: a tombstone, which deletes the key from an upsert topic).
    #[arg(long, conflicts_with = "key")]
    key_separator: Option<String>,
    /// Acknowledge after writing to the operating system instead of after fsync (survives a
    /// process crash, not a power loss).
    #[arg(long)]
    no_fsync: bool,
}

/// Lines appended per partition in one durable write.
const PRODUCE_BATCH: usize = 4096;

pub fn produce(data_dir: &Path, args: ProduceArgs) -> Result<()> {
    let log = Log::open(data_dir)?;
    let topic = log.topic(&args.topic)?;
    let n = topic.partitions();
    let durability = if args.no_fsync { Durability::OsBuffer } else { Durability::Fsync };
    let mut writers = (0..n).map(|p| topic.writer(p, durability)).collect::<Result<Vec<_>, _>>()?;
    let mut pending: Vec<Vec<Record>> = vec![Vec::new(); n as usize];
    let mut written = 0u64;
    let mut next = 0u32;
    let flush = |pending: &mut Vec<Vec<Record>>,
                 writers: &mut Vec<keel_log::PartitionWriter>,
                 written: &mut u64|
     -> Result<()> {
        for (p, recs) in pending.iter_mut().enumerate() {
            if !recs.is_empty() {
                writers[p]
                    .append(recs)
                    .with_context(|| format!("appending to topic '{}' partition {p}", args.topic))?;
                *written += recs.len() as u64;
                recs.clear();
            }
        }
        Ok(())
    };
    let stdin = std::io::stdin();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(sep) = &args.key_separator {
            let Some((key, value)) = line.split_once(sep.as_str()) else {
                flush(&mut pending, &mut writers, &mut written)?;
                bail!(
                    "line {} has no key separator '{sep}'; the {written} record(s) before it were written, nothing after it",
                    i + 1
                );
            };
            let problem = if !value.is_empty() {
                serde_json::from_str::<serde_json::Value>(value)
                    .err()
                    .map(|e| format!("its value is not valid JSON ({e})"))
            } else if key.is_empty() {
                Some("it has neither a key nor a value (a tombstone needs a key)".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                flush(&mut pending, &mut writers, &mut written)?;
                bail!("line {}: {problem}; the {written} record(s) before it were written, nothing after it", i + 1);
            }
            let (partition, key) = if key.is_empty() {
                next = (next + 1) % n;
                (next, None)
            } else {
                ((keel_types::keys::hash_key(key.as_bytes()) % u64::from(n)) as u32, Some(key.as_bytes().to_vec()))
            };
            let recs = &mut pending[partition as usize];
            recs.push(Record::new(key, value.as_bytes().to_vec()));
            if recs.len() >= PRODUCE_BATCH {
                flush(&mut pending, &mut writers, &mut written)?;
            }
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                flush(&mut pending, &mut writers, &mut written)?;
                bail!(
                    "line {} is not valid JSON ({e}); the {written} record(s) before it were written, nothing after it",
                    i + 1
                );
            }
        };
        let (partition, key) = match &args.key {
            Some(field) => {
                let k = match value.get(field) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Null) | None => {
                        flush(&mut pending, &mut writers, &mut written)?;
                        bail!(
                            "line {} has no value for the key field '{field}'; the {written} record(s) before it were written, nothing after it",
                            i + 1
                        );
                    }
                    Some(other) => other.to_string(),
                };
                let p = (keel_types::keys::hash_key(k.as_bytes()) % u64::from(n)) as u32;
                (p, Some(k.into_bytes()))
            }
            None => {
                next = (next + 1) % n;
                (next, None)
            }
        };
        let recs = &mut pending[partition as usize];
        recs.push(Record::new(key, line.into_bytes()));
        if recs.len() >= PRODUCE_BATCH {
            flush(&mut pending, &mut writers, &mut written)?;
        }
    }
    flush(&mut pending, &mut writers, &mut written)?;
    eprintln!(
        "wrote {written} record(s) to topic '{}'{}",
        args.topic,
        if args.no_fsync { " (not fsynced)" } else { "" }
    );
    Ok(())
}

#[derive(Args)]
pub struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    /// earliest, latest, or an offset (applied to every partition read).
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Keep waiting for new records instead of exiting at the end of committed data.
    #[arg(long)]
    follow: bool,
    /// Print each record as KEY SEP VALUE (an empty KEY when the record has none).
    #[arg(long)]
    key_separator: Option<String>,
    /// Replay the topic as a changelog (debezium-json or upsert records) up to its current end
    /// and print the resulting table, one JSON object per line, sorted.
    #[arg(long, conflicts_with = "key_separator")]
    materialize: bool,
}

pub fn consume(data_dir: &Path, args: ConsumeArgs) -> Result<()> {
    let log = Log::open(data_dir)?;
    let topic = log.topic(&args.topic)?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => (0..topic.partitions()).collect(),
    };
    let mut readers = vec![];
    for &p in &partitions {
        let info = topic.partition_info(p)?;
        let from = match args.from.as_str() {
            "earliest" => info.start_offset,
            "latest" => info.end_offset,
            n => n.parse::<u64>().with_context(|| format!("--from '{n}' is not earliest, latest or an offset"))?,
        };
        readers.push(topic.reader(p, from)?);
    }
    if args.materialize {
        if args.follow {
            bail!(
                "--materialize prints the table as of the topic's current end and cannot --follow; run it again to see later changes"
            );
        }
        return materialize(&topic, &partitions, &args.from);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let mut any = false;
        for r in &mut readers {
            while let Some(chunk) = r.read(1 << 20)? {
                any = true;
                let mut result = Ok(());
                chunk.for_each(|rec| {
                    if result.is_ok() {
                        result = write_record(&mut out, rec, args.key_separator.as_deref());
                    }
                })?;
                if let Err(e) = result {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e).context("writing to standard output");
                }
            }
        }
        if !args.follow {
            break;
        }
        if !any {
            out.flush().ok();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    out.flush().ok();
    Ok(())
}

/// Prints one record: its value (a tombstone, an empty value, as `null`), or with a separator
/// `KEY SEP VALUE` as `produce --key-separator` reads it back.
fn write_record(out: &mut impl Write, rec: keel_log::RecordRef<'_>, sep: Option<&str>) -> std::io::Result<()> {
    match sep {
        Some(sep) => {
            out.write_all(rec.key.unwrap_or_default())?;
            out.write_all(sep.as_bytes())?;
            out.write_all(rec.value)?;
        }
        None if rec.value.is_empty() => out.write_all(b"null")?,
        None => out.write_all(rec.value)?,
    }
    out.write_all(b"\n")
}

/// `consume --materialize`: applies every committed record of `partitions` from their start to
/// their end as of now, then prints the table and, on standard error, a summary.
fn materialize(topic: &keel_log::Topic, partitions: &[u32], from: &str) -> Result<()> {
    if from != "earliest" {
        bail!("--materialize replays each partition from its start; it cannot be combined with --from {from}");
    }
    let mut table = Materialized::default();
    for &p in partitions {
        let info = topic.partition_info(p)?;
        let end = info.end_offset;
        let mut reader = topic.reader(p, info.start_offset)?;
        while reader.position() < end {
            let Some(chunk) = reader.read(1 << 20)? else { break };
            let mut result = Ok(());
            chunk.for_each(|rec| {
                if result.is_ok() && rec.offset < end {
                    let at = Position { topic: topic.name(), partition: p, offset: rec.offset };
                    result = table.apply(rec.key, rec.value, at);
                }
            })?;
            result?;
        }
    }
    let lines = table.lines();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in &lines {
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("writing to standard output");
        }
    }
    out.flush().ok();
    let unmatched = table.unmatched_removals();
    eprintln!(
        "{} row(s) from {} record(s) applied of topic '{}'{}",
        lines.len(),
        table.applied,
        topic.name(),
        if unmatched > 0 { format!("; {unmatched} removal(s) found no equal row") } else { String::new() }
    );
    Ok(())
}
