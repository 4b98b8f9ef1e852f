//! probe
#[cfg(test)]
mod tests {
    #[test]
    fn probe() {
        let ctx = crate::planner::session();
        let st = ctx.state();
        let mut names: Vec<_> = st.scalar_functions().keys().cloned().collect();
        names.sort();
        println!("FUNCS {}", names.join(" "));
        for q in [
            "select year(ts), month(ts), minute(ts), second(ts), dayofweek(ts), dayofmonth(ts) from (select cast('2024-03-01 12:34:56.789' as timestamp) as ts)",
            "select char_length('héllo'), initcap('hello wORLD foo-bar'), lpad('hi', 5, '??'), rpad('hi', 5, 'xy'), lpad('hello', 2, 'x'), lpad('hi', -1, 'x'), lpad('hi', 4, '')",
            "select extract(year from cast('2024-03-01 12:34:56.789' as timestamp)), date_part('second', cast('2024-03-01 12:34:56.789' as timestamp))",
            "select timestampadd(HOUR, 1, cast('2024-03-01 12:34:56.789' as timestamp))",
            "select timestampdiff(HOUR, cast('2024-03-01 12:34:56.789' as timestamp), cast('2024-03-01 14:34:56.789' as timestamp))",
            "select floor(cast('2024-03-01 12:34:56.789' as timestamp) to hour)",
            "select date_format(cast('2024-03-01 12:34:56.789' as timestamp), 'yyyy')",
            "select to_timestamp_ltz(1, 3)",
            "select initcap(NULL), char_length(NULL)",
        ] {
            let r = futures::executor::block_on(async { ctx.sql(q).await?.collect().await });
            match r {
                Ok(b) => {
                    println!("Q {q}\n{}", arrow::util::pretty::pretty_format_batches(&b).unwrap());
                    println!("{:?}", b[0].schema().fields().iter().map(|f| f.data_type().clone()).collect::<Vec<_>>());
                }
                Err(e) => println!("Q {q}\nERR {e}"),
            }
        }
    }
}
