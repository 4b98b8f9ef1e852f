//! Partitioned filesystem output (`PARTITIONED BY (col, ...)`), as Flink's filesystem sink
//! writes it: each row goes to the Hive-style directory `PATH/col1=v1/col2=v2/`, and the
//! partition columns are left out of the file rows (the directory carries them).
//!
//! Invariants:
//! - A partition path is made of the column names and the row's values, each escaped as Flink's
//!   `PartitionPathUtils.escapePathName` escapes them (ASCII control characters and
//!   `" # % ' * / : = ? \ DEL { [ ] ^` become `%XX`, upper-case hex), so a value never adds a
//!   directory level or names a hidden file; a NULL or blank value is the default partition name
//!   (`'partition.default-name'`, Flink's `__DEFAULT_PARTITION__`).
//! - `split` keeps every row of a batch exactly once, in its order within its partition.
//! - The file life cycle (in-progress, pending, published) is the `FileSink`'s, applied in each
//!   partition directory; recovery finds those directories with `partition_dirs`.

use crate::error::ConnectorError;
use arrow::array::{Array, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use keel_runtime::{Result, RuntimeError};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Flink's default for `'partition.default-name'`: the directory name of a NULL or blank value.
pub const DEFAULT_PARTITION_NAME: &str = "__DEFAULT_PARTITION__";

/// Flink's default for `'sink.partition-commit.success-file.name'`.
pub const SUCCESS_FILE_NAME: &str = "_SUCCESS";

/// How a filesystem sink partitions its rows into directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// The partition columns, outermost directory level first.
    pub columns: Vec<String>,
    /// The directory value written for a NULL or blank partition value.
    pub default_name: String,
    /// With the `success-file` commit policy: the empty file written into each partition
    /// directory when a checkpoint that published files into it completes.
    pub success_file: Option<String>,
}

impl Partitioning {
    /// Partitioning by `columns`, with Flink's default partition name and no success file.
    pub fn new(columns: Vec<String>) -> Self {
        Partitioning { columns, default_name: DEFAULT_PARTITION_NAME.to_string(), success_file: None }
    }

    pub fn with_default_name(mut self, name: impl Into<String>) -> Self {
        self.default_name = name.into();
        self
    }

    pub fn with_success_file(mut self, name: Option<String>) -> Self {
        self.success_file = name;
        self
    }

    /// Splits a batch by partition: the partition path relative to the sink's directory (for
    /// example `dt=2024-01-01/hm=10%3A15`) and that partition's rows without the partition
    /// columns. Partitions come in the order of their first row.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        let schema = batch.schema();
        let mut part_cols = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            // Invariant: the planner projects every row to the sink table's columns, names included.
            let i = schema.index_of(c).map_err(|_| {
                RuntimeError::Internal(format!("partition column {c} is missing from the rows given to the file sink"))
            })?;
            part_cols.push(i);
        }
        let data_cols: Vec<usize> = (0..batch.num_columns()).filter(|i| !part_cols.contains(i)).collect();
        let data = batch.project(&data_cols).map_err(RuntimeError::arrow("projecting the non-partition columns"))?;
        let options = FormatOptions::new()
            .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.3f"))
            .with_date_format(Some("%Y-%m-%d"));
        let formatters = part_cols
            .iter()
            .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(RuntimeError::arrow("formatting partition values"))?;
        let prefixes: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut p = String::new();
                escape_path_name(c, &mut p);
                p.push('=');
                p
            })
            .collect();
        let mut groups: Vec<(String, Vec<u32>)> = vec![];
        let mut index: HashMap<String, usize> = HashMap::new();
        let (mut key, mut value) = (String::new(), String::new());
        let mut last: Option<usize> = None;
        for row in 0..batch.num_rows() {
            key.clear();
            for (k, (&col, f)) in part_cols.iter().zip(&formatters).enumerate() {
                if k > 0 {
                    key.push('/');
                }
                key.push_str(&prefixes[k]);
                value.clear();
                if batch.column(col).is_valid(row) {
                    f.value(row).write(&mut value).map_err(RuntimeError::arrow("formatting a partition value"))?;
                }
                let v = if value.trim().is_empty() { self.default_name.as_str() } else { value.as_str() };
                escape_path_name(v, &mut key);
            }
            let g = match last {
                Some(g) if groups[g].0 == key => g,
                _ => match index.get(&key) {
                    Some(&g) => g,
                    None => {
                        index.insert(key.clone(), groups.len());
                        groups.push((key.clone(), vec![]));
                        groups.len() - 1
                    }
                },
            };
            groups[g].1.push(row as u32);
            last = Some(g);
        }
        if groups.len() == 1 {
            let (path, _) = groups.pop().unwrap_or_default();
            return Ok(vec![(path, data)]);
        }
        groups
            .into_iter()
            .map(|(path, rows)| {
                let part = if data.num_columns() == 0 {
                    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
                    RecordBatch::try_new_with_options(data.schema(), vec![], &options)
                } else {
                    arrow::compute::take_record_batch(&data, &UInt32Array::from(rows))
                };
                Ok((path, part.map_err(RuntimeError::arrow("selecting a partition's rows"))?))
            })
            .collect()
    }
}

/// Appends `name` escaped as Flink escapes partition path names.
pub fn escape_path_name(name: &str, out: &mut String) {
    for c in name.chars() {
        let escape = c < ' '
            || c == '\u{7f}'
            || matches!(c, '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^');
        if escape {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
}

/// The directories that may hold a sink's files: `root` and, down to `depth` levels, the
/// partition directories under it (names of the form `col=value`, not hidden).
pub(crate) fn partition_dirs(root: &Path, depth: usize) -> Result<Vec<PathBuf>> {
    let mut out = vec![root.to_path_buf()];
    let mut level = vec![root.to_path_buf()];
    for _ in 0..depth {
        let mut next = vec![];
        for d in &level {
            for e in fs::read_dir(d).map_err(ConnectorError::io("cannot list", d))? {
                let e = e.map_err(ConnectorError::io("cannot list", d))?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || name.starts_with('_') || !name.contains('=') {
                    continue;
                }
                if e.file_type().map_err(ConnectorError::io("cannot inspect", &e.path()))?.is_dir() {
                    next.push(e.path());
                }
            }
        }
        out.extend(next.iter().cloned());
        level = next;
    }
    Ok(out)
}

/// Writes the empty success file `name` into `dir` (the caller makes the directory durable).
pub(crate) fn write_success_file(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    File::create(&path).map_err(ConnectorError::io("cannot write the success file", &path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{FileFormat, FileSink};
    use crate::upsert::tests::ctx;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use keel_runtime::{Operator, RestoredState, TaskContext};
    use std::sync::Arc;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        escape_path_name(s, &mut out);
        out
    }

    /// Rows (a, dt, hm); `None` is NULL.
    fn rows(rows: &[(i64, Option<&str>, Option<&str>)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("dt", DataType::Utf8, true),
            Field::new("hm", DataType::Utf8, true),
        ]);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
        ];
        RecordBatch::try_new(Arc::new(schema), cols).unwrap()
    }

    fn by_dt_hm() -> Partitioning {
        Partitioning::new(vec!["dt".into(), "hm".into()])
    }

    fn sink(out: &Path, p: Partitioning) -> FileSink {
        FileSink::new(out.to_path_buf(), FileFormat::Csv).for_table("t").partitioned(p)
    }

    /// Every file under `dir` (relative path, content), sorted.
    fn tree(dir: &Path) -> Vec<(String, String)> {
        let mut out = vec![];
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                    out.push((rel, fs::read_to_string(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn published(dir: &Path) -> Vec<(String, String)> {
        tree(dir).into_iter().filter(|(p, _)| p.rsplit('/').next().unwrap().starts_with("part-")).collect()
    }

    #[test]
    fn escapes_as_flink_does() {
        assert_eq!(escaped("10:15"), "10%3A15");
        assert_eq!(escaped("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(escaped("%#?*'\"\\{[]^"), "%25%23%3F%2A%27%22%5C%7B%5B%5D%5E");
        assert_eq!(escaped("tab\there\n\u{1}\u{7f}"), "tab%09here%0A%01%7F");
        // Left alone: letters, digits, space, '-', '.', '}', '+', and non-ASCII text.
        assert_eq!(escaped("2024-01-01 x.y}+é"), "2024-01-01 x.y}+é");
    }

    #[test]
    fn split_groups_rows_by_escaped_partition_and_drops_partition_columns() {
        let p = by_dt_hm();
        let batch = rows(&[
            (1, Some("2024-01-01"), Some("10:15")),
            (2, Some("2024-01-01"), Some("10:16")),
            (3, Some("2024-01-01"), Some("10:15")),
            (4, None, Some("10:15")),
            (5, Some("a/b"), Some("  ")),
        ]);
        let parts = p.split(&batch).unwrap();
        let got: Vec<(String, Vec<i64>)> = parts
            .iter()
            .map(|(path, b)| {
                assert_eq!(b.num_columns(), 1, "only column a is written");
                assert_eq!(b.schema().field(0).name(), "a");
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                (path.clone(), a.values().to_vec())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("dt=2024-01-01/hm=10%3A15".to_string(), vec![1, 3]),
                ("dt=2024-01-01/hm=10%3A16".to_string(), vec![2]),
                ("dt=__DEFAULT_PARTITION__/hm=10%3A15".to_string(), vec![4]),
                ("dt=a%2Fb/hm=__DEFAULT_PARTITION__".to_string(), vec![5]),
            ]
        );
        let one = p.split(&rows(&[(7, Some("d"), Some("h")), (8, Some("d"), Some("h"))])).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].0.as_str(), one[0].1.num_rows()), ("dt=d/hm=h", 2));
        let custom = by_dt_hm().with_default_name("none").split(&rows(&[(9, None, Some(""))])).unwrap();
        assert_eq!(custom[0].0, "dt=none/hm=none");
        let err = Partitioning::new(vec!["zz".into()]).split(&batch).unwrap_err();
        assert!(matches!(err, RuntimeError::Internal(_)) && err.to_string().contains("zz"), "{err}");
    }

    #[test]
    fn non_string_partition_values_are_formatted_like_flink_casts_them() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None), true),
        ]);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![Some(1_704_103_200_250), None])),
        ];
        let batch = RecordBatch::try_new(Arc::new(schema), cols).unwrap();
        let parts = Partitioning::new(vec!["a".into(), "ts".into()]).split(&batch).unwrap();
        let paths: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(paths, vec!["a=1/ts=2024-01-01 10%3A00%3A00.250", "a=2/ts=__DEFAULT_PARTITION__"]);
        assert_eq!((parts[0].1.num_columns(), parts[0].1.num_rows()), (0, 1));
    }

    #[test]
    fn partition_files_are_hidden_until_the_checkpoint_completes_then_published_with_success_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut s = sink(&out, by_dt_hm().with_success_file(Some(SUCCESS_FILE_NAME.into())));
        s.open(&ctx(dir.path()), RestoredState::default()).unwrap();
        s.process(rows(&[(1, Some("d1"), Some("10:00")), (2, Some("d1"), Some("10:01"))]), &mut vec![]).unwrap();
        s.process(rows(&[(3, Some("d1"), Some("10:00")), (4, None, None)]), &mut vec![]).unwrap();
        // One in-progress file per partition.
        let hidden: Vec<String> = tree(&out).into_iter().map(|f| f.0).collect();
        assert_eq!(hidden.len(), 3, "{hidden:?}");
        assert!(hidden.iter().all(|f| f.ends_with(".inprogress")), "{hidden:?}");
        s.snapshot(1).unwrap();
        let files = tree(&out);
        assert!(files.iter().all(|f| f.0.ends_with(".j-0-1.pending")), "{files:?}");
        assert!(published(&out).is_empty());
        // Rows of the next interval stay apart from checkpoint 1's.
        s.process(rows(&[(5, Some("d1"), Some("10:00"))]), &mut vec![]).unwrap();
        s.checkpoint_complete(1).unwrap();
        assert_eq!(
            published(&out),
            vec![
                ("dt=__DEFAULT_PARTITION__/hm=__DEFAULT_PARTITION__/part-j-0-0000000001.csv".to_string(), "4\n".into()),
                ("dt=d1/hm=10%3A00/part-j-0-0000000001.csv".to_string(), "1\n3\n".into()),
                ("dt=d1/hm=10%3A01/part-j-0-0000000001.csv".to_string(), "2\n".into()),
            ]
        );
        let success: Vec<String> = tree(&out).into_iter().map(|f| f.0).filter(|f| f.ends_with("/_SUCCESS")).collect();
        assert_eq!(success.len(), 3, "{success:?}");
        s.snapshot(2).unwrap();
        s.checkpoint_complete(2).unwrap();
        let all = published(&out);
        assert_eq!(all.len(), 4);
        assert!(all.contains(&("dt=d1/hm=10%3A00/part-j-0-0000000002.csv".to_string(), "5\n".into())), "{all:?}");
        assert!(tree(&out).iter().all(|f| !f.0.rsplit('/').next().unwrap().starts_with('.')));
    }

    #[test]
    fn any_number_of_partitions_is_written_with_a_bounded_number_of_open_files() {
        // Counts this process's open files: alone in a child process, where no other test opens any.
        if keel_types::test_child::run_in_child(
            "partitioned::tests::any_number_of_partitions_is_written_with_a_bounded_number_of_open_files",
        ) {
            return;
        }
        let open_files = || fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut s = sink(&out, Partitioning::new(vec!["dt".into()]));
        s.open(&ctx(dir.path()), RestoredState::default()).unwrap();
        let bound = crate::sinks::MAX_OPEN_FILES_PER_SINK;
        let partitions = 2 * bound + 50;
        let names: Vec<String> = (0..partitions).map(|p| format!("p{p:04}")).collect();
        let mut rng = keel_types::test_rng::Lcg::seeded("partitions_with_bounded_open_files");
        let before = open_files();
        let mut most = 0;
        // Three rounds, each row of a round in another partition, in a random order: every
        // partition's file is closed and opened again between its rows.
        for round in 0..3i64 {
            let mut order: Vec<usize> = (0..partitions).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for chunk in order.chunks(97) {
                let batch: Vec<(i64, Option<&str>, Option<&str>)> =
                    chunk.iter().map(|&p| (round * 10_000 + p as i64, Some(names[p].as_str()), Some("x"))).collect();
                s.process(rows(&batch), &mut vec![]).unwrap();
                most = most.max(open_files().saturating_sub(before));
            }
        }
        assert!(most <= bound, "{most} files open at once for {partitions} partitions; the bound is {bound}");
        s.snapshot(1).unwrap();
        s.checkpoint_complete(1).unwrap();
        let files = published(&out);
        assert_eq!(files.len(), partitions, "one file per partition");
        for (p, name) in names.iter().enumerate() {
            let want: String = (0..3).map(|round| format!("{},x\n", round * 10_000 + p)).collect();
            let path = format!("dt={name}/part-j-0-0000000001.csv");
            assert_eq!(files.iter().find(|f| f.0 == path).map(|f| f.1.as_str()), Some(want.as_str()), "{path}");
        }
    }

    #[test]
    fn a_partitioned_debezium_sink_keeps_each_change_kind_without_the_partition_column() {
        use keel_runtime::changelog::RowKind::*;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut s =
            FileSink::new(out.clone(), FileFormat::DebeziumJson).partitioned(Partitioning::new(vec!["k".into()]));
        s.open(&ctx(dir.path()), RestoredState::default()).unwrap();
        let batch = crate::upsert::tests::changes(&[("a", 1, Insert), ("b", 2, Insert), ("a", 1, Delete)]);
        s.process(batch, &mut vec![]).unwrap();
        s.snapshot(1).unwrap();
        s.checkpoint_complete(1).unwrap();
        assert_eq!(
            published(&out),
            vec![
                (
                    "k=a/part-j-0-0000000001.jsonl".to_string(),
                    concat!(
                        r#"{"before":null,"after":{"n":1},"op":"c"}"#,
                        "\n",
                        r#"{"before":{"n":1},"after":null,"op":"d"}"#,
                        "\n"
                    )
                    .to_string()
                ),
                (
                    "k=b/part-j-0-0000000001.jsonl".to_string(),
                    "{\"before\":null,\"after\":{\"n\":2},\"op\":\"c\"}\n".into()
                ),
            ]
        );
    }

    #[test]
    fn recovery_publishes_pending_files_up_to_the_checkpoint_and_deletes_the_rest_in_every_partition() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let ctx_of = |subtask: u32, parallelism: u32| TaskContext { subtask, parallelism, ..ctx(dir.path()) };
        // Two subtasks of a first run: checkpoint 1 is pending (complete, never committed: a
        // crash), checkpoint 2 is pending and not complete, and then rows in progress.
        let mut runs = vec![];
        for sub in 0..2u32 {
            let mut s = sink(&out, by_dt_hm().with_success_file(Some("_DONE".into())));
            s.open(&ctx_of(sub, 2), RestoredState::default()).unwrap();
            let v = i64::from(sub) * 10;
            s.process(rows(&[(v + 1, Some("d"), Some("h1")), (v + 2, Some("d"), Some("h2"))]), &mut vec![]).unwrap();
            s.snapshot(1).unwrap();
            s.process(rows(&[(v + 3, Some("d"), Some("h1"))]), &mut vec![]).unwrap();
            s.snapshot(2).unwrap();
            s.process(rows(&[(v + 4, Some("e"), Some("h3"))]), &mut vec![]).unwrap();
            runs.push(s);
        }
        drop(runs); // killed: no commit, in-progress files left behind
        assert!(published(&out).is_empty());
        assert_eq!(tree(&out).len(), 8, "{:?}", tree(&out));
        // Restart at parallelism 1 from checkpoint 1: both old subtasks' files are its own.
        let mut s = sink(&out, by_dt_hm().with_success_file(Some("_DONE".into())));
        s.open(&ctx_of(0, 1), RestoredState { checkpoint: Some(1), ..Default::default() }).unwrap();
        let files = tree(&out);
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "dt=d/hm=h1/_DONE",
                "dt=d/hm=h1/part-j-0-0000000001.csv",
                "dt=d/hm=h1/part-j-1-0000000001.csv",
                "dt=d/hm=h2/_DONE",
                "dt=d/hm=h2/part-j-0-0000000001.csv",
                "dt=d/hm=h2/part-j-1-0000000001.csv",
            ],
            "pending files of checkpoint 2 and in-progress files are deleted; empty directories may stay"
        );
        let rows_of = |name: &str| files.iter().find(|f| f.0 == name).unwrap().1.clone();
        assert_eq!(rows_of("dt=d/hm=h1/part-j-1-0000000001.csv"), "11\n");
        assert_eq!(rows_of("dt=d/hm=h2/part-j-0-0000000001.csv"), "2\n");
        // Recovery with no complete checkpoint deletes every pending file.
        let out2 = dir.path().join("out2");
        let mut s = sink(&out2, by_dt_hm());
        s.open(&ctx(dir.path()), RestoredState::default()).unwrap();
        s.process(rows(&[(1, Some("d"), Some("h"))]), &mut vec![]).unwrap();
        s.snapshot(1).unwrap();
        let mut s = sink(&out2, by_dt_hm());
        s.open(&ctx(dir.path()), RestoredState::default()).unwrap();
        assert!(tree(&out2).is_empty(), "{:?}", tree(&out2));
    }
}
