//! `keel topic` (create, list, describe, delete, repair) and `keel consume`.
//!
//! Records have an optional key and a value (`produce` writes them, see `produce`). `consume`
//! prints values (a tombstone as `null`), or `KEY SEP VALUE` with `--key-separator`, or with
//! `--materialize` the table a changelog topic describes (see `materialize`). Offsets that
//! `keel topic repair` found damaged are skipped by `consume`, which says so on standard error.

use super::materialize::{Materialized, Position};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use keel_log::{Log, TopicConfig};
use std::io::Write;
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
        /// The largest record (key plus value bytes) the topic accepts, as Kafka's
        /// max.message.bytes; larger records are refused with nothing written.
        #[arg(long, default_value_t = keel_log::DEFAULT_MAX_MESSAGE_BYTES)]
        max_message_bytes: u64,
    },
    /// List topics.
    List,
    /// Show a topic's partitions: offsets and sizes.
    Describe { name: String },
    /// Delete a topic and all its data.
    Delete { name: String },
    /// Check every segment of a topic's partitions and repair damage: damaged bytes are moved
    /// to the partition's damaged/ directory, and the offsets they held are reported as lost.
    Repair {
        name: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<u32>,
        /// Only report what a repair would do; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn topic(data_dir: &Path, args: TopicArgs) -> Result<()> {
    let log = Log::open(data_dir)?;
    match args.command {
        TopicCommand::Create { name, partitions, retention_bytes, retention, segment_bytes, max_message_bytes } => {
            let mut cfg = TopicConfig::new(partitions);
            cfg.segment_bytes = segment_bytes;
            cfg.max_message_bytes = max_message_bytes;
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
                "topic '{name}': {} partition(s), segment size {} bytes, max message {} bytes, retention {}, {}",
                c.partitions,
                c.segment_bytes,
                c.max_message_bytes,
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
        TopicCommand::Repair { name, partition, dry_run } => repair(&log, &name, partition, dry_run)?,
    }
    Ok(())
}

/// `keel topic repair`: checks (and unless `dry_run` repairs) each partition, printing what was
/// damaged, where its bytes went and exactly which offsets are lost.
fn repair(log: &Log, name: &str, partition: Option<u32>, dry_run: bool) -> Result<()> {
    let t = log.topic(name)?;
    let _admin = t.admin_lock(&format!("keel topic repair {name}"))?;
    let partitions: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => (0..t.partitions()).collect(),
    };
    let (mut damaged, mut lost) = (0, 0u64);
    for p in partitions {
        let report = t.repair_partition(p, dry_run)?;
        if report.damaged.is_empty() && !report.rebuilt_producers {
            println!("partition {p}: intact ({} segment(s), {} bytes checked)", report.segments, report.bytes_checked);
            continue;
        }
        for d in &report.damaged {
            let offsets = match d.lost_offsets {
                Some((a, b)) if b > a => format!("offsets {a}..{} lost ({} record(s))", b - 1, b - a),
                Some(_) => "no offsets lost".to_string(),
                None => "a torn tail: no readable record lost".to_string(),
            };
            let kept = match &d.kept_in {
                Some(path) => format!("; the bytes are kept in {}", path.display()),
                None if dry_run && d.to_byte > d.from_byte => "; would be moved aside".to_string(),
                None => String::new(),
            };
            println!(
                "partition {p}: {} bytes {}..{} damaged ({}): {offsets}{kept}",
                d.segment.display(),
                d.from_byte,
                d.to_byte,
                d.reason
            );
        }
        if report.rebuilt_producers {
            println!(
                "partition {p}: producers.json was unreadable and {} rebuilt from the segments",
                if dry_run { "would be" } else { "was" }
            );
        }
        damaged += report.damaged.len();
        lost += report.lost();
    }
    if damaged > 0 {
        println!(
            "{} {damaged} damaged range(s); {lost} offset(s) lost in all{}",
            if dry_run { "found" } else { "repaired" },
            if dry_run { " (dry run: nothing changed; run without --dry-run to repair)" } else { "" }
        );
    }
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
                for (from, to) in chunk.gaps() {
                    eprintln!(
                        "topic '{}': offsets {from}..{} were lost to damage (see `keel topic repair`); skipped",
                        args.topic,
                        to - 1
                    );
                }
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
