//! Tests of the plan-time limits: each refused construct is named with its place and the limit,
//! the largest accepted one still plans, and what used to crash the process is refused instead
//! (those run in a child process: a stack overflow would abort the test binary).

use super::*;

const EVENTS: &str = "CREATE TABLE events (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE out_t (user_id VARCHAR, amount BIGINT) WITH ('connector' = 'blackhole');
";

fn opts(parallelism: u32) -> crate::PipelineOptions {
    crate::PipelineOptions {
        job: "limits".into(),
        data_dir: ".".into(),
        parallelism,
        bounded: true,
        udfs: vec![],
        udafs: vec![],
    }
}

/// Plans `EVENTS` and then `tail` (line 4 on); the error text, or `None` when it plans.
fn plan_err(tail: &str) -> Option<String> {
    crate::plan(&format!("{EVENTS}{tail}"), &opts(2)).err().map(|e| e.to_string())
}

fn refused(tail: &str, expect: &[&str]) {
    let err = plan_err(tail).unwrap_or_else(|| panic!("expected a refusal of:\n{}", &tail[..tail.len().min(300)]));
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {}", &err[..err.len().min(500)]);
    }
}

fn plans(tail: &str) {
    if let Some(err) = plan_err(tail) {
        panic!("expected to plan, got: {}", &err[..err.len().min(500)]);
    }
}

fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

#[test]
fn long_expression_chains_are_refused_before_planning() {
    // 4,000 `+` terms and 5,000 OR terms overflowed the planner's stack (the process aborted).
    if keel_types::test_child::run_in_child("limits::tests::long_expression_chains_are_refused_before_planning") {
        return;
    }
    let limit = format!("more than {MAX_EXPRESSION_DEPTH} levels deep");
    let plus = format!("INSERT INTO out_t SELECT user_id, {} FROM events;", chain("amount", " + ", 4_000));
    // The whole sum is level 1 and each `+` adds one: the limit is passed at the `+` numbered
    // MAX_EXPRESSION_DEPTH, which starts at column 42 + 9 * (MAX_EXPRESSION_DEPTH - 1).
    let place = format!("line 4, column {}:", 42 + 9 * (MAX_EXPRESSION_DEPTH - 1));
    refused(&plus, &[&limit, &place]);
    let ors =
        format!("INSERT INTO out_t SELECT user_id, amount FROM events WHERE {};", chain("amount = 1", " OR ", 5_000));
    refused(&ors, &[&limit, "line 4, column ", "x IN (...)"]);
    let parens =
        format!("INSERT INTO out_t SELECT user_id, {}amount{} FROM events;", "(".repeat(3_000), ")".repeat(3_000));
    refused(&parens, &[&limit]);
    let calls =
        format!("INSERT INTO out_t SELECT user_id, {}amount{} FROM events;", "ABS(".repeat(3_000), ")".repeat(3_000));
    refused(&calls, &[&limit]);
    let negations = format!("INSERT INTO out_t SELECT user_id, {}amount FROM events;", "- ".repeat(3_000));
    refused(&negations, &[&limit]);
    // Nested through a view, and in a computed column.
    let view = format!(
        "CREATE VIEW v AS SELECT user_id, {} AS amount FROM events;\nINSERT INTO out_t SELECT user_id, amount FROM v;",
        chain("amount", " * ", 3_000)
    );
    refused(&view, &[&limit]);
    let computed = format!(
        "CREATE TABLE c (a BIGINT, b AS {}) WITH ('connector' = 'datagen');\nINSERT INTO out_t SELECT 'x', b FROM c;",
        chain("a", " + ", 3_000)
    );
    refused(&computed, &[&limit]);
}

#[test]
fn expressions_within_the_limits_still_plan() {
    // Planned on the caller's thread, a chain at the limit overflowed a test thread's 2 MiB
    // stack: `plan` runs on a thread of its own with a large stack.
    if keel_types::test_child::run_in_child("limits::tests::expressions_within_the_limits_still_plan") {
        return;
    }
    // A chain as deep as the limit allows (the SELECT list's other operators count too).
    let plus =
        format!("INSERT INTO out_t SELECT user_id, {} FROM events;", chain("amount", " + ", MAX_EXPRESSION_DEPTH - 8));
    plans(&plus);
    let ors = format!(
        "INSERT INTO out_t SELECT user_id, amount FROM events WHERE {};",
        chain("amount = 1", " OR ", MAX_EXPRESSION_DEPTH / 2 - 8)
    );
    plans(&ors);
    // Long but flat: an IN list, many columns, many CASE-free conditions in separate calls.
    let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    plans(&format!("INSERT INTO out_t SELECT user_id, amount FROM events WHERE amount IN ({});", list.join(", ")));
    let case: Vec<String> = (0..MAX_CASE_BRANCHES).map(|i| format!("WHEN amount = {i} THEN {i}")).collect();
    plans(&format!("INSERT INTO out_t SELECT user_id, CASE {} ELSE 0 END FROM events;", case.join(" ")));
}

#[test]
fn a_case_with_too_many_branches_is_refused_at_its_place() {
    let branches = |n: usize| (0..n).map(|i| format!("WHEN {i} THEN {i}")).collect::<Vec<_>>().join(" ");
    let limit = format!("more than {MAX_CASE_BRANCHES} WHEN branches");
    refused(
        &format!("INSERT INTO out_t SELECT user_id, CASE amount {} ELSE amount END FROM events;", branches(10_000)),
        &[&limit, "line 4, column 35:", "join"],
    );
    // Inside another CASE, each counts its own branches.
    let inner = format!("CASE amount {} END", branches(MAX_CASE_BRANCHES + 1));
    refused(
        &format!("INSERT INTO out_t SELECT user_id, CASE WHEN amount > 0 THEN {inner} ELSE 0 END FROM events;"),
        &[&limit, "line 4, column 61:"],
    );
    let two = format!("CASE amount {} END", branches(MAX_CASE_BRANCHES));
    plans(&format!("INSERT INTO out_t SELECT user_id, CASE WHEN amount > 0 THEN {two} ELSE {two} END FROM events;"));
}

#[test]
fn pads_and_repeats_longer_than_the_limit_are_refused_at_plan_time() {
    for (call, name) in [
        ("LPAD(user_id, 9223372036854775807, 'x')", "LPAD"),
        ("RPAD(user_id, 2147483648, 'x')", "RPAD"),
        ("rpad(user_id, 1048577, 'x')", "RPAD"),
        ("REPEAT(user_id, 2147483648)", "REPEAT"),
        ("repeat('ab', 600000)", "REPEAT"),
        ("LPAD(user_id, 1024 * 1024 * 1024, 'x')", "LPAD"),
    ] {
        let err = plan_err(&format!("INSERT INTO out_t SELECT {call}, amount FROM events;"))
            .unwrap_or_else(|| panic!("{call} planned"));
        assert!(err.contains(name) && err.contains(&format!("limit of {MAX_BUILT_STRING}")), "{call}: {err}");
        assert!(err.starts_with("line 4, column 26:"), "{call}: {err}");
    }
    plans("INSERT INTO out_t SELECT LPAD(user_id, 1048576, 'x'), amount FROM events;");
    plans("INSERT INTO out_t SELECT REPEAT(user_id, amount), amount FROM events;");
}

#[test]
fn windows_per_row_are_bounded_and_day_long_windows_of_minutes_still_plan() {
    let window = |tvf: &str| {
        format!(
            "CREATE TABLE w (n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO w SELECT COUNT(*) FROM TABLE({tvf}(TABLE events, DESCRIPTOR(ts), {})) GROUP BY window_start, window_end;",
            "INTERVAL '1' MILLISECOND, INTERVAL '1' DAY"
        )
    };
    let limit = keel_types::window::MAX_WINDOWS_PER_ROW.to_string();
    for tvf in ["HOP", "CUMULATE"] {
        let err = plan_err(&window(tvf)).unwrap_or_else(|| panic!("{tvf} of 1 ms over a day planned"));
        assert!(err.contains(tvf) && err.contains("86400000 windows") && err.contains(&limit), "{err}");
        assert!(err.starts_with("line 5, column "), "{err}");
    }
    plans(
        "CREATE TABLE w (n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO w SELECT COUNT(*) FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '1' DAY)) GROUP BY window_start, window_end;",
    );
    plans(
        "CREATE TABLE w (n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO w SELECT COUNT(*) FROM TABLE(CUMULATE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' DAY)) GROUP BY window_start, window_end;",
    );
}

#[test]
fn views_used_inside_views_are_inlined_a_bounded_number_of_times() {
    let views = |levels: usize| {
        let mut sql = "CREATE VIEW v0 AS SELECT user_id, amount FROM events;\n".to_string();
        for i in 1..=levels {
            let p = i - 1;
            sql += &format!(
                "CREATE VIEW v{i} AS SELECT a.user_id, a.amount FROM v{p} a JOIN v{p} b ON a.user_id = b.user_id;\n"
            );
        }
        sql + &format!("INSERT INTO out_t SELECT user_id, amount FROM v{levels};")
    };
    // 1 + 2 + 4 + ... + 2^levels uses: 127 for 6 levels, 16,383 for 13 (which planned for minutes).
    plans(&views(6));
    refused(&views(13), &[&format!("more than {MAX_VIEW_EXPANSIONS} times")]);
}

#[test]
fn string_literals_longer_than_the_limit_are_refused() {
    let literal = |n: usize| format!("INSERT INTO out_t SELECT '{}', amount FROM events;", "x".repeat(n));
    refused(&literal(MAX_LITERAL_BYTES + 1), &["line 4, column 26:", &format!("limit of {MAX_LITERAL_BYTES} bytes")]);
    plans(&literal(MAX_LITERAL_BYTES));
}

#[test]
fn a_parallelism_of_zero_or_beyond_the_key_groups_is_refused() {
    let sql = format!("{EVENTS}INSERT INTO out_t SELECT user_id, amount FROM events;");
    for p in [0, 129, 4096] {
        let err = crate::plan(&sql, &opts(p)).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("-p {p} planned"));
        assert!(err.contains(&format!("parallelism {p}")), "{err}");
        assert!(err.contains("1 to 128"), "{err}");
    }
    assert!(crate::plan(&sql, &opts(128)).is_ok());
}
