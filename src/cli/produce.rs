//! `keel produce`: appends lines of standard input to a topic as records, durably.
//!
//! Each line is a JSON value (keyed by a field with `--key`), or `KEY SEP VALUE` with
//! `--key-separator` (an empty value is a tombstone). Records are appended per partition in
//! groups (at most `GROUP_RECORDS` records or `GROUP_BYTES` bytes; all partitions' groups once
//! `PENDING_BYTES` are held), each group durable when its append returns.
//!
//! Invariants: a line is read with at most the topic's record size limit in memory (a longer
//! line is refused without reading the rest of it); input stops at the first line that cannot
//! become a record (not UTF-8, not JSON, too long, no key), after the lines before it were
//! written; whenever the command fails it says how many records were written durably and the
//! first line that was not, because an append that fails leaves nothing of itself (the log
//! cuts a failed write back; should even that fail, the log says so, and the records of that
//! one append may be there), so every line before that one is in the topic exactly once.

use anyhow::{Context, Result, bail};
use clap::Args;
use keel_log::{Durability, Log, PartitionWriter, Record};
use std::io::{BufRead, Read};
use std::path::Path;

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

/// Records appended per partition in one durable write, at most.
const GROUP_RECORDS: usize = 4096;
/// Bytes of records appended per partition in one durable write, about.
const GROUP_BYTES: usize = 4 << 20;
/// Bytes of records held over all partitions before they are all appended (with thousands of
/// partitions, the per-partition bound alone would allow GBs).
const PENDING_BYTES: usize = 16 << 20;

/// Lines waiting to be appended, per partition: the records, and their line numbers.
struct Pending {
    writers: Vec<PartitionWriter>,
    records: Vec<Vec<Record>>,
    lines: Vec<Vec<u64>>,
    bytes: Vec<usize>,
    total: usize,
    written: u64,
    topic: String,
}

impl Pending {
    fn push(&mut self, partition: u32, line: u64, record: Record) -> Result<()> {
        let p = partition as usize;
        self.bytes[p] += record.size();
        self.total += record.size();
        self.records[p].push(record);
        self.lines[p].push(line);
        if self.records[p].len() >= GROUP_RECORDS || self.bytes[p] >= GROUP_BYTES || self.total >= PENDING_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends every partition's pending lines; on failure says what is durable and what is not.
    fn flush(&mut self) -> Result<()> {
        for p in 0..self.writers.len() {
            if self.records[p].is_empty() {
                continue;
            }
            if let Err(e) = self.writers[p].append(&self.records[p]) {
                let first_unwritten = self.lines.iter().filter_map(|l| l.first().copied()).min().unwrap_or(0);
                return Err(anyhow::Error::new(e).context(format!(
                    "appending to topic '{}' partition {p} failed: {} record(s) were written and are durable; \
                     line {first_unwritten} and some lines after it were not (every line before it was)",
                    self.topic, self.written
                )));
            }
            self.written += self.records[p].len() as u64;
            self.total -= self.bytes[p];
            self.records[p].clear();
            self.lines[p].clear();
            self.bytes[p] = 0;
        }
        debug_assert_eq!(self.total, 0, "invariant: a flush leaves nothing pending");
        Ok(())
    }

    /// Flushes what came before a bad line, then fails naming the line.
    fn refuse(&mut self, line: u64, problem: impl std::fmt::Display) -> Result<()> {
        self.flush()?;
        let problem = problem.to_string();
        let sep = if problem.starts_with(':') { "" } else { " " };
        bail!("line {line}{sep}{problem}; the {} record(s) before it were written, nothing after it", self.written)
    }
}

pub fn produce(data_dir: &Path, args: ProduceArgs) -> Result<()> {
    let log = Log::open(data_dir)?;
    let topic = log.topic(&args.topic)?;
    let n = topic.partitions();
    let durability = if args.no_fsync { Durability::OsBuffer } else { Durability::Fsync };
    let writers = (0..n).map(|p| topic.writer(p, durability)).collect::<Result<Vec<_>, _>>()?;
    let limit = topic.config().max_message_bytes;
    let mut pending = Pending {
        writers,
        records: vec![Vec::new(); n as usize],
        lines: vec![Vec::new(); n as usize],
        bytes: vec![0; n as usize],
        total: 0,
        written: 0,
        topic: args.topic.clone(),
    };
    let mut next = 0u32;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    let mut number = 0u64;
    loop {
        buf.clear();
        // A separator costs a few bytes on top of the record; allow for them and the newline.
        let cap = limit + args.key_separator.as_ref().map_or(0, |s| s.len() as u64) + 2;
        let read = (&mut input).take(cap).read_until(b'\n', &mut buf).context("reading standard input")?;
        if read == 0 {
            break;
        }
        number += 1;
        if buf.last() != Some(&b'\n') && read as u64 == cap {
            pending.refuse(
                number,
                format!("is longer than topic '{}' accepts ({limit} bytes, its max-message-bytes)", args.topic),
            )?;
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => l,
            Err(e) => return pending.refuse(number, format!("is not valid UTF-8 (at byte {})", e.valid_up_to() + 1)),
        };
        if line.trim().is_empty() {
            continue;
        }
        let (partition, record) = match &args.key_separator {
            Some(sep) => match keyed_line(line, sep, n, &mut next) {
                Ok(r) => r,
                Err(problem) => return pending.refuse(number, problem),
            },
            None => match json_line(line, args.key.as_deref(), n, &mut next) {
                Ok(r) => r,
                Err(problem) => return pending.refuse(number, problem),
            },
        };
        if record.size() as u64 > limit {
            return pending.refuse(
                number,
                format!(
                    "makes a record of {} bytes, larger than topic '{}' accepts ({limit} bytes, its max-message-bytes)",
                    record.size(),
                    args.topic
                ),
            );
        }
        pending.push(partition, number, record)?;
    }
    pending.flush()?;
    eprintln!(
        "wrote {} record(s) to topic '{}'{}",
        pending.written,
        args.topic,
        if args.no_fsync { " (not fsynced)" } else { "" }
    );
    Ok(())
}

/// A `KEY SEP VALUE` line as a record and its partition, or what is wrong with it.
fn keyed_line(line: &str, sep: &str, partitions: u32, next: &mut u32) -> Result<(u32, Record), String> {
    let Some((key, value)) = line.split_once(sep) else {
        return Err(format!("has no key separator '{sep}'"));
    };
    if !value.is_empty()
        && let Err(e) = serde_json::from_str::<serde_json::Value>(value)
    {
        return Err(format!(": its value is not valid JSON ({e})"));
    }
    if value.is_empty() && key.is_empty() {
        return Err(": it has neither a key nor a value (a tombstone needs a key)".to_string());
    }
    let (partition, key) = if key.is_empty() {
        *next = (*next + 1) % partitions;
        (*next, None)
    } else {
        ((keel_types::keys::hash_key(key.as_bytes()) % u64::from(partitions)) as u32, Some(key.as_bytes().to_vec()))
    };
    Ok((partition, Record::new(key, value.as_bytes().to_vec())))
}

/// A JSON line as a record (keyed by `key_field`'s value) and its partition.
fn json_line(line: &str, key_field: Option<&str>, partitions: u32, next: &mut u32) -> Result<(u32, Record), String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("is not valid JSON ({e})"))?;
    let (partition, key) = match key_field {
        Some(field) => {
            let k = match value.get(field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => {
                    return Err(format!("has no value for the key field '{field}'"));
                }
                Some(other) => other.to_string(),
            };
            ((keel_types::keys::hash_key(k.as_bytes()) % u64::from(partitions)) as u32, Some(k.into_bytes()))
        }
        None => {
            *next = (*next + 1) % partitions;
            (*next, None)
        }
    };
    Ok((partition, Record::new(key, line.as_bytes().to_vec())))
}
