//! Tests of the time functions: the arithmetic on its own, and the functions through SQL in a
//! planning session (coercion, plan-time refusals, NULLs).

use super::*;
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;

/// Epoch milliseconds of a UTC time written `YYYY-MM-DD HH:MM:SS.mmm`.
fn at(s: &str) -> i64 {
    let (date, time) = s.split_once(' ').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, millis) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let date = NaiveDate::from_ymd_opt(d[0] as i32, d[1] as u32, d[2] as u32).unwrap();
    ms_of(date) + (t[0] * 3600 + t[1] * 60 + t[2]) * 1000 + millis.parse::<i64>().unwrap()
}

#[test]
fn floor_and_ceil_follow_flink() {
    let t = at("2024-03-06 13:04:05.067"); // a Wednesday
    let cases = [
        (Unit::Second, "2024-03-06 13:04:05", "2024-03-06 13:04:06"),
        (Unit::Minute, "2024-03-06 13:04:00", "2024-03-06 13:05:00"),
        (Unit::Hour, "2024-03-06 13:00:00", "2024-03-06 14:00:00"),
        (Unit::Day, "2024-03-06 00:00:00", "2024-03-07 00:00:00"),
        (Unit::Week, "2024-03-03 00:00:00", "2024-03-10 00:00:00"),
        (Unit::Month, "2024-03-01 00:00:00", "2024-04-01 00:00:00"),
        (Unit::Quarter, "2024-01-01 00:00:00", "2024-04-01 00:00:00"),
        (Unit::Year, "2024-01-01 00:00:00", "2025-01-01 00:00:00"),
    ];
    for (unit, f, c) in cases {
        assert_eq!(floor(t, unit), Some(at(f)), "FLOOR TO {unit:?}");
        assert_eq!(ceil(t, unit), Some(at(c)), "CEIL TO {unit:?}");
        // A boundary stays where it is, both ways.
        assert_eq!(ceil(at(f), unit), Some(at(f)), "CEIL of a {unit:?} boundary");
        assert_eq!(floor(at(c), unit), Some(at(c)), "FLOOR of a {unit:?} boundary");
    }
    // Before the epoch: 1969-12-31 23:59:59.999 (a Wednesday).
    assert_eq!(floor(-1, Unit::Hour), Some(at("1969-12-31 23:00:00")));
    assert_eq!(floor(-1, Unit::Week), Some(at("1969-12-28 00:00:00")));
    assert_eq!(ceil(-1, Unit::Day), Some(0));
    // A Sunday is its own week's start.
    assert_eq!(floor(at("2024-03-10 00:00:00"), Unit::Week), Some(at("2024-03-10 00:00:00")));
}

#[test]
fn timestampadd_clamps_months_and_timestampdiff_truncates() {
    let t = at("2024-01-31 10:00:00");
    assert_eq!(add(t, Unit::Month, 1), Some(at("2024-02-29 10:00:00")));
    assert_eq!(add(t, Unit::Quarter, 1), Some(at("2024-04-30 10:00:00")));
    assert_eq!(add(t, Unit::Year, -1), Some(at("2023-01-31 10:00:00")));
    assert_eq!(add(t, Unit::Week, 1), Some(at("2024-02-07 10:00:00")));
    assert_eq!(add(t, Unit::Hour, -11), Some(at("2024-01-30 23:00:00")));
    assert_eq!(add(t, Unit::Second, i64::MAX), None, "overflow is NULL");

    let (a, b) = (at("2003-01-02 10:00:00"), at("2003-01-03 10:00:00"));
    assert_eq!(diff(Unit::Day, a, b), Some(1));
    assert_eq!(diff(Unit::Day, b, a), Some(-1));
    assert_eq!(diff(Unit::Hour, a, b - 1), Some(23), "truncated");
    assert_eq!(diff(Unit::Hour, b - 1, a), Some(-23), "truncated toward zero");
    assert_eq!(diff(Unit::Week, a, b), Some(0));
    // Months count whole months, the time of day included.
    assert_eq!(diff(Unit::Month, at("2024-01-31 10:00:00"), at("2024-02-29 10:00:00")), Some(1));
    assert_eq!(diff(Unit::Month, at("2024-01-31 10:00:00"), at("2024-02-29 09:59:59")), Some(0));
    assert_eq!(diff(Unit::Month, at("2024-02-29 09:59:59"), at("2024-01-31 10:00:00")), Some(0));
    assert_eq!(diff(Unit::Month, at("2024-03-15 00:00:00"), at("2024-01-15 00:00:00")), Some(-2));
    assert_eq!(diff(Unit::Year, at("2020-02-29 00:00:00"), at("2021-02-28 00:00:00")), Some(1));
    assert_eq!(diff(Unit::Year, at("2020-03-01 00:00:00"), at("2021-02-28 00:00:00")), Some(0));
    assert_eq!(diff(Unit::Quarter, at("2024-01-01 00:00:00"), at("2024-12-31 00:00:00")), Some(3));
}

#[test]
fn parts_match_flink_extract() {
    let t = at("2024-03-03 13:04:05.067"); // a Sunday, ISO week 9
    let want = [
        (Part::Year, 2024),
        (Part::Quarter, 1),
        (Part::Month, 3),
        (Part::Week, 9),
        (Part::DayOfYear, 63),
        (Part::DayOfMonth, 3),
        (Part::DayOfWeek, 1),
        (Part::Hour, 13),
        (Part::Minute, 4),
        (Part::Second, 5),
    ];
    for (p, v) in want {
        assert_eq!(part(t, p), Some(v), "{p:?}");
    }
    assert_eq!(part(at("2024-03-09 00:00:00"), Part::DayOfWeek), Some(7), "Saturday");
    assert_eq!(part(at("2021-01-01 00:00:00"), Part::Week), Some(53), "ISO week of the year before");
    assert_eq!(part(-1, Part::Second), Some(59));
    assert_eq!(part(-1, Part::Year), Some(1969));
}

/// Runs `SELECT <exprs> FROM t` in a planning session (after the time-syntax rewrite), where `t`
/// has `ts TIMESTAMP(3)`, `d DATE`, `n BIGINT`, `s VARCHAR` and rows at `T` and all NULL.
fn query(exprs: &str) -> Result<RecordBatch> {
    let ctx = crate::planner::session();
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", ts_ms_type(), true),
        Field::new("d", DataType::Date32, true),
        Field::new("n", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let t = at("2024-03-01 13:04:05.067");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(vec![Some(t), None])),
        Arc::new(arrow::array::Date32Array::from(vec![Some((t / DAY_MS) as i32), None])),
        Arc::new(Int64Array::from(vec![Some(t / 1000), None])),
        Arc::new(arrow::array::StringArray::from(vec![Some("2024-03-01 13:04:05"), None])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let table = datafusion::catalog::MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let toks = crate::script::tokenize(&format!("SELECT {exprs} FROM t")).unwrap();
    let sql = crate::script::render(&rewrite_time_syntax(&toks).unwrap());
    let batches = futures::executor::block_on(async { ctx.sql(&sql).await?.collect().await })?;
    Ok(arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap())
}

/// Each column's two rows as display strings ("" for NULL).
fn rows(b: &RecordBatch) -> Vec<[String; 2]> {
    let fmt = arrow::util::display::FormatOptions::default();
    b.columns()
        .iter()
        .map(|c| {
            let f = arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &fmt).unwrap();
            [0, 1].map(|i| if c.is_null(i) { String::new() } else { f.value(i).to_string() })
        })
        .collect()
}

#[test]
fn through_sql_with_flink_types_and_nulls() {
    let b = query(
        "DATE_FORMAT(ts, 'yyyy-MM-dd'), DATE_FORMAT(ts, 'HH:mm'), DATE_FORMAT(s, 'yyyy/MM/dd HH'), \
         DATE_FORMAT(d, 'EEE dd MMM'), year(ts), MONTH(d), DAYOFWEEK(ts), DAYOFMONTH(ts), minute(ts), second(ts), \
         HOUR(CAST('2024-01-01 05:00:00' AS TIMESTAMP)), TO_TIMESTAMP_LTZ(n, 0), TO_TIMESTAMP_LTZ(n * 1000 + 67, 3), \
         TO_TIMESTAMP_LTZ(1.5, 0), TIMESTAMPADD(MONTH, 1, ts), TIMESTAMPDIFF(MINUTE, ts, TIMESTAMPADD(HOUR, 2, ts)), \
         FLOOR(ts TO HOUR), CEIL(ts TO DAY), FLOOR(ts TO WEEK), FLOOR(ts TO QUARTER)",
    )
    .unwrap();
    let types: Vec<DataType> = b.schema().fields().iter().map(|f| f.data_type().clone()).collect();
    let (s, i64t, ts) = (DataType::Utf8, DataType::Int64, ts_ms_type());
    assert_eq!(
        types,
        vec![
            s.clone(),
            s.clone(),
            s.clone(),
            s,
            i64t.clone(),
            i64t.clone(),
            i64t.clone(),
            i64t.clone(),
            i64t.clone(),
            i64t.clone(),
            i64t,
            ts.clone(),
            ts.clone(),
            ts.clone(),
            ts.clone(),
            DataType::Int32,
            ts.clone(),
            ts.clone(),
            ts.clone(),
            ts,
        ]
    );
    let got: Vec<String> = rows(&b).iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        got,
        vec![
            "2024-03-01",
            "13:04",
            "2024/03/01 13",
            "Fri 01 Mar",
            "2024",
            "3",
            "6",
            "1",
            "4",
            "5",
            "5",
            "2024-03-01T13:04:05",
            "2024-03-01T13:04:05.067",
            "1970-01-01T00:00:01.500",
            "2024-04-01T13:04:05.067",
            "120",
            "2024-03-01T13:00:00",
            "2024-03-02T00:00:00",
            "2024-02-25T00:00:00",
            "2024-01-01T00:00:00",
        ]
    );
    // The second row is NULL everywhere its input is (the CAST literal is not).
    let nulls: Vec<bool> = rows(&b).iter().map(|r| r[1].is_empty()).collect();
    let mut want = vec![true; 20];
    want[10] = false;
    want[13] = false;
    assert_eq!(nulls, want);
}

#[test]
fn literal_mistakes_are_refused_when_planning() {
    for (expr, says) in [
        ("DATE_FORMAT(ts, 'yyyy-ww')", "pattern letter 'w'"),
        ("TO_TIMESTAMP_LTZ(n, 6)", "precision must be 0"),
        ("TIMESTAMPADD('DECADE', 1, ts)", "unknown time unit 'DECADE'"),
        ("YEAR(s)", "YEAR takes (timestamp or date)"),
        ("TIMESTAMPADD(HOUR, 1.5, ts)", "TIMESTAMPADD takes (unit, integer, timestamp)"),
    ] {
        let e = query(expr).unwrap_err().to_string();
        assert!(e.contains(says), "{expr}: {e}");
    }
}

#[test]
fn units_and_precisions_from_columns_are_checked_per_row() {
    let e = query("TIMESTAMPDIFF(lower(s), ts, ts)").unwrap_err().to_string();
    assert!(e.contains("unknown time unit '2024-03-01 13:04:05'"), "{e}");
    let e = query("TO_TIMESTAMP_LTZ(n, CAST(n AS INT))").unwrap_err().to_string();
    assert!(e.contains("precision must be 0"), "{e}");
}
