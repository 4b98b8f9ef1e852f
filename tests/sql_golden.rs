//! Golden SQL cases: each `tests/golden/*.case` file holds an input (JSON lines), a pipeline,
//! and the expected result, either written out (`-- expected`, derived by reasoning) or as an
//! equivalent batch query (`-- batch`) that DataFusion runs over the whole finite input. Every
//! case runs twice: straight through, and with the process killed (SIGKILL at seeded fault points
//! while checkpointing and committing) and restarted until it finishes. Both runs must give the
//! expected rows exactly (as a multiset; a streaming result has no order).
//!
//! Case file sections: `-- partitions: N` (optional, default 1), `-- parallelism: N` (optional:
//! for results that depend on watermark timing across several inputs, such as which rows are
//! late), `-- input` (topic and table `input`) or `-- input NAME` (topic and table NAME; a case
//! may have several), `-- pipeline`, and `-- batch` or `-- expected`. The pipeline writes topic
//! `output`. An updating query writes it as debezium-json: its changelog is replayed and the
//! final table compared (so a duplicated or lost change shows as a wrong row).

mod common;
use common::*;
use std::path::Path;
use std::process::Stdio;

struct Case {
    name: String,
    partitions: u32,
    /// `None`: the straight run uses 2 and the killed runs 1 or 2 at random.
    parallelism: Option<u32>,
    /// (table and topic name, JSON lines)
    inputs: Vec<(String, Vec<String>)>,
    pipeline: String,
    batch: Option<String>,
    expected: Option<Vec<String>>,
}

fn parse_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let mut case = Case {
        name: path.file_stem().unwrap().to_string_lossy().to_string(),
        partitions: 1,
        parallelism: None,
        inputs: vec![],
        pipeline: String::new(),
        batch: None,
        expected: None,
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("-- partitions:") {
            case.partitions = p.trim().parse().unwrap();
            continue;
        }
        if let Some(p) = line.strip_prefix("-- parallelism:") {
            case.parallelism = Some(p.trim().parse().unwrap());
            continue;
        }
        if let Some(name) = line.trim().strip_prefix("-- input") {
            let name = name.trim();
            case.inputs.push((if name.is_empty() { "input" } else { name }.to_string(), vec![]));
            section = "-- input";
            continue;
        }
        match line.trim() {
            "-- pipeline" | "-- batch" | "-- expected" => {
                section = line.trim();
                if section == "-- batch" {
                    case.batch = Some(String::new());
                }
                if section == "-- expected" {
                    case.expected = Some(vec![]);
                }
                continue;
            }
            _ => {}
        }
        match section {
            "-- input" if !line.trim().is_empty() => {
                if let Some(last) = case.inputs.last_mut() {
                    last.1.push(line.to_string())
                }
            }
            "-- pipeline" => case.pipeline.push_str(&format!("{line}\n")),
            "-- batch" => case.batch.as_mut().unwrap().push_str(&format!("{line}\n")),
            "-- expected" if !line.trim().is_empty() => case.expected.as_mut().unwrap().push(line.to_string()),
            _ => {}
        }
    }
    assert!(!case.pipeline.is_empty(), "{}: no pipeline section", case.name);
    assert!(
        case.batch.is_some() != case.expected.is_some(),
        "{}: give exactly one of -- batch or -- expected",
        case.name
    );
    case
}

/// Canonical form of a row for comparison: JSON with keys sorted and numbers normalised.
fn canon(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys.iter().map(|k| format!("{k:?}:{}", canon(&m[*k]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{}", (f * 1e9).round() / 1e9),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn canon_lines(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|l| canon(&serde_json::from_str(l).expect("a JSON row"))).collect();
    v.sort();
    v
}

/// Runs the batch query with DataFusion over the whole input.
fn batch_expected(case: &Case) -> Vec<String> {
    let toks = keel::sql::script::tokenize(&case.pipeline).unwrap();
    let defs: Vec<_> = keel::sql::script::split_statements(toks)
        .into_iter()
        .filter_map(|s| keel::sql::script::parse_create_table(&s).ok())
        .collect();
    let ctx = datafusion::prelude::SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(1),
    );
    for f in keel::sql::functions::flink_aggregates() {
        ctx.register_udaf(f);
    }
    for (name, lines) in &case.inputs {
        let mut def = defs
            .iter()
            .find(|d| &d.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{}: the pipeline creates no table {name} for its input section", case.name));
        // The stored columns only: a batch query computes what computed columns would.
        def.columns.retain(|c| c.computed.is_none());
        let schema = keel::sql::planner::table_schema(&def);
        let mut decoder = keel::connectors::json::JsonDecoder::new(schema.clone()).unwrap();
        let values: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let decoded = decoder.decode(&values).unwrap();
        let table = datafusion::catalog::MemTable::try_new(schema, vec![vec![decoded.batch]]).unwrap();
        ctx.register_table(name.as_str(), std::sync::Arc::new(table)).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let batches = rt
        .block_on(async { ctx.sql(case.batch.as_deref().unwrap()).await?.collect().await })
        .unwrap_or_else(|e| panic!("{}: batch query: {e}", case.name));
    let mut out = vec![];
    for b in &batches {
        for r in 0..b.num_rows() {
            let mut s = String::new();
            keel::connectors::json::encode_row(b, r, &mut s);
            out.push(s);
        }
    }
    out
}

fn setup(case: &Case, data: &Path) -> std::path::PathBuf {
    let log = keel::log::Log::open(data).unwrap();
    for (name, lines) in &case.inputs {
        let topic = log.create_topic(name, keel::log::TopicConfig::new(case.partitions)).unwrap();
        // One record per producer batch: the watermark moves after each, so lateness is
        // deterministic, and checkpoints can fall between any two records.
        for (i, line) in lines.iter().enumerate() {
            let mut w = topic.writer(i as u32 % case.partitions, keel::log::Durability::OsBuffer).unwrap();
            w.append(&[keel::log::Record::new(None, line.as_bytes().to_vec())]).unwrap();
        }
    }
    let sql = data.join(format!("{}.sql", case.name));
    std::fs::write(&sql, &case.pipeline).unwrap();
    sql
}

fn output(data: &Path) -> Vec<String> {
    // An updating query's debezium-json changelog is replayed into the final table.
    replay_changelog(topic_rows(data, "output")).iter().map(|v| v.to_string()).collect()
}

fn run_straight(case: &Case) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let sql = setup(case, dir.path());
    let p = case.parallelism.unwrap_or(2).to_string();
    run_ok(keel(dir.path()).args([
        "run",
        sql.to_str().unwrap(),
        "--bounded",
        "--quiet",
        "-p",
        &p,
        "--restart-attempts",
        "0",
    ]));
    output(dir.path())
}

fn run_with_kills(case: &Case, rng: &mut Rng) -> (Vec<String>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let sql = setup(case, dir.path());
    let points = ["checkpoint.before-manifest", "checkpoint.after-manifest", "sink.commit"];
    let mut kills = 0;
    for attempt in 0.. {
        assert!(attempt < 30, "{}: did not finish after 30 restarts", case.name);
        let mut cmd = keel(dir.path());
        cmd.args([
            "run",
            sql.to_str().unwrap(),
            "--bounded",
            "--quiet",
            "--restart-attempts",
            "0",
            "--checkpoint-interval",
            "10ms",
            "-p",
        ])
        .arg(case.parallelism.map(|p| p.to_string()).unwrap_or_else(|| (1 + rng.below(2)).to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        if kills < 3 {
            // The first kill fires at the first hit, which every case reaches (each checkpoints
            // at least once and commits output); later ones may come a hit later.
            let at = if kills == 0 { 1 } else { 1 + rng.below(2) };
            cmd.env("KEEL_FAULTS", format!("{}=kill@{at}", points[rng.below(3) as usize]));
        }
        let out = cmd.output().unwrap();
        if out.status.success() {
            break;
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{}: {}", case.name, String::from_utf8_lossy(&out.stderr));
        kills += 1;
    }
    assert!(kills >= 1, "{}: no kill landed", case.name);
    (output(dir.path()), kills)
}

#[test]
fn golden_cases_match_straight_through_and_across_kills() {
    let seed = seed("sql_golden");
    let mut rng = Rng(seed);
    let dir = manifest_dir().join("tests/golden");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    paths.sort();
    // KEEL_GOLDEN_ONLY=a,b runs only the cases whose names contain one of the words (development).
    if let Ok(only) = std::env::var("KEEL_GOLDEN_ONLY") {
        paths.retain(|p| only.split(',').any(|w| p.file_stem().is_some_and(|n| n.to_string_lossy().contains(w))));
        assert!(!paths.is_empty(), "KEEL_GOLDEN_ONLY={only} matches no case");
    } else {
        assert!(paths.len() >= 60, "expected at least 60 golden cases, found {}", paths.len());
    }
    let mut failures = vec![];
    for path in paths {
        let case = parse_case(&path);
        let expected = canon_lines(&match &case.expected {
            Some(rows) => rows.clone(),
            None => batch_expected(&case),
        });
        assert!(!expected.is_empty(), "{}: the expected result is empty, which proves nothing", case.name);
        let straight = canon_lines(&run_straight(&case));
        if straight != expected {
            failures.push(format!("{} (straight):\n  expected {expected:?}\n  got      {straight:?}", case.name));
            continue;
        }
        let (killed, kills) = run_with_kills(&case, &mut rng);
        let killed = canon_lines(&killed);
        if killed != expected {
            failures
                .push(format!("{} (after {kills} kills):\n  expected {expected:?}\n  got      {killed:?}", case.name));
        }
        println!("{}: ok ({} rows; straight, and with {kills} kill(s))", case.name, expected.len());
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}
