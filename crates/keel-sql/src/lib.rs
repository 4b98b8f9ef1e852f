//! Keel's Flink SQL front end. A pipeline file holds `CREATE TABLE` statements (Flink DDL with
//! `WITH` connector options and `WATERMARK FOR`) and one `INSERT INTO ... SELECT`. `plan` reads
//! and checks it completely (every refusal names the construct and its line and column) without
//! touching disk; `Pipeline::build_graph` then resolves sources against the data directory,
//! records first-start facts in the job file, and returns the runtime's job graph.

pub mod build;
mod case_lookup;
pub mod connectors;
mod cse;
pub mod error;
pub mod functions;
mod generators;
mod interval_join;
pub mod limits;
mod over;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod planner;
mod pushdown;
mod regex_extract;
pub mod scalar;
mod scalar_time;
pub mod script;
mod share;
mod slicing;
mod translate;
mod type_check;
mod window_calls;

pub use connectors::{SinkKind, SourcePlan};
pub use error::{Pos, SqlError};

use crate::build::InsertBuilder;
use crate::error::Result;
use crate::planner::InsertPlan;
use datafusion::sql::sqlparser::tokenizer::Token;
use keel_runtime::{JobDir, JobGraph};
use std::collections::HashMap;
use std::path::PathBuf;

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub job: String,
    pub data_dir: PathBuf,
    pub parallelism: u32,
    pub bounded: bool,
    /// User-defined scalar functions (Rust code) the SQL may call, registered through the API.
    pub udfs: Vec<datafusion::logical_expr::ScalarUDF>,
    /// User-defined aggregate functions (DataFusion `AggregateUDF`s), registered through the API.
    pub udafs: Vec<datafusion::logical_expr::AggregateUDF>,
}

/// A checked, planned pipeline.
pub struct Pipeline {
    /// Identifies the pipeline's meaning (whitespace and comments do not count).
    pub fingerprint: String,
    /// One planned INSERT per statement of the statement set, in file order.
    pub inserts: Vec<InsertPlan>,
    opts: PipelineOptions,
    /// The pipeline's INSERT was written `EXPLAIN INSERT ...`: print the plan, do not run.
    pub explain_only: bool,
}

/// Reads, checks and plans a pipeline file's text (on a thread of its own, with a large stack:
/// see `limits`).
pub fn plan(sql: &str, opts: &PipelineOptions) -> Result<Pipeline> {
    limits::check_parallelism(opts.parallelism)?;
    limits::on_planning_stack(|| plan_here(sql, opts))
}

fn plan_here(sql: &str, opts: &PipelineOptions) -> Result<Pipeline> {
    let toks = script::tokenize(sql)?;
    limits::check_nesting(&toks)?;
    let fingerprint = format!(
        "{:016x}",
        keel_types::keys::hash_key(
            toks.iter()
                .filter(|t| !matches!(t.token, Token::Whitespace(_)))
                .map(|t| t.token.to_string())
                .collect::<Vec<_>>()
                .join(" ")
                .as_bytes()
        )
    );
    let mut tables: HashMap<String, script::TableDef> = HashMap::new();
    let mut views: HashMap<String, Vec<script::Tok>> = HashMap::new();
    let mut explain = false;
    let mut inserts = vec![];
    let mut settings = planner::Settings::default();
    // Inside Flink's `EXECUTE STATEMENT SET BEGIN ... END;` or `BEGIN STATEMENT SET; ... END;`
    // (where it was opened). Every INSERT of a pipeline is in one job anyway; the brackets only
    // say so, and only INSERTs may stand between them.
    let mut statement_set: Option<Pos> = None;
    for stmt in script::split_statements(toks) {
        let mut c = script::Cursor::new(&stmt);
        let pos = c.pos();
        if c.is_keyword("EXECUTE") || c.is_keyword("BEGIN") {
            let execute = c.eat_keyword("EXECUTE");
            if !execute {
                c.expect_keyword("BEGIN")?;
            }
            c.expect_keyword("STATEMENT")?;
            c.expect_keyword("SET")?;
            if execute {
                c.expect_keyword("BEGIN")?;
            }
            if statement_set.is_some() {
                return Err(SqlError::invalid(pos, "a STATEMENT SET inside another one"));
            }
            statement_set = Some(pos);
            if c.peek().is_none() {
                continue;
            }
        } else if c.is_keyword("END") {
            c.expect_keyword("END")?;
            if statement_set.take().is_none() {
                return Err(SqlError::invalid(pos, "END without a STATEMENT SET to close"));
            }
            continue;
        }
        if statement_set.is_some() && !c.is_keyword("INSERT") {
            let word = c.peek().map(|t| t.token.to_string().to_uppercase()).unwrap_or_default();
            return Err(SqlError::invalid(
                c.pos(),
                format!("a {word} statement inside a STATEMENT SET, which holds INSERT INTO statements only"),
            ));
        }
        if c.is_keyword("CREATE") {
            let kind = c.peek_nth(1).map(|t| t.token.to_string().to_uppercase());
            let kind = if kind.as_deref() == Some("TEMPORARY") {
                c.peek_nth(2).map(|t| t.token.to_string().to_uppercase())
            } else {
                kind
            };
            match kind.as_deref() {
                Some("TABLE") => {
                    let def = script::parse_create_table(&stmt)?;
                    if tables.contains_key(&def.name) {
                        return Err(SqlError::invalid(def.pos, format!("table {} is created twice", def.name)));
                    }
                    tables.insert(def.name.clone(), def);
                }
                Some("VIEW") => {
                    let (name, vpos, query) = script::parse_create_view(&stmt)?;
                    if tables.contains_key(&name) || views.contains_key(&name) {
                        return Err(SqlError::invalid(vpos, format!("{name} is created twice")));
                    }
                    views.insert(name, query);
                }
                Some("FUNCTION") => {
                    return Err(SqlError::unsupported(
                        pos,
                        "CREATE FUNCTION",
                        Some("register functions through the Rust API"),
                    ));
                }
                other => return Err(SqlError::unsupported(pos, format!("CREATE {}", other.unwrap_or_default()), None)),
            }
        } else if c.is_keyword("EXPLAIN") || c.is_keyword("INSERT") {
            if c.eat_keyword("EXPLAIN") {
                if c.eat_keyword("PLAN") {
                    c.expect_keyword("FOR")?;
                }
                explain = true;
            }
            c.expect_keyword("INSERT")?;
            c.expect_keyword("INTO")?;
            let (sink, spos) = c.ident()?;
            if c.peek().is_some_and(|t| t.token == Token::LParen) {
                return Err(SqlError::unsupported(
                    c.pos(),
                    "an INSERT column list",
                    Some("select the sink's columns in its order"),
                ));
            }
            let rest = limits::inline_checked(&stmt[c.index()..], &views)?;
            inserts.push((sink, spos, rest));
        } else if c.eat_keyword("SET") {
            let (key, kpos) = c.string()?;
            c.expect(&Token::Eq)?;
            let (value, vpos) = c.string()?;
            match key.as_str() {
                "table.exec.state.ttl" => {
                    let ttl = keel_types::time::parse_duration(&value).map_err(|e| {
                        SqlError::invalid(
                            vpos,
                            format!("'table.exec.state.ttl' = '{value}': {e} (write e.g. '1 h', '30 min', '10 s')"),
                        )
                    })?;
                    settings.state_ttl = (!ttl.is_zero()).then_some(ttl);
                }
                other => {
                    return Err(SqlError::unsupported(
                        kpos,
                        format!("the setting '{other}'"),
                        Some(
                            "Keel reads 'table.exec.state.ttl' here; pass parallelism and checkpointing as `keel run` flags",
                        ),
                    ));
                }
            }
        } else {
            let word = c.peek().map(|t| t.token.to_string().to_uppercase()).unwrap_or_default();
            let alt = match word.as_str() {
                "SELECT" => Some("write `INSERT INTO some_table SELECT ...` with a 'print' table to see results"),
                _ => None,
            };
            return Err(SqlError::unsupported(pos, format!("a {word} statement"), alt));
        }
    }
    if let Some(open) = statement_set {
        return Err(SqlError::invalid(open, "this STATEMENT SET is not closed: end it with END;"));
    }
    if inserts.is_empty() {
        return Err(SqlError::invalid(
            Pos { line: 1, column: 1 },
            "the pipeline has no INSERT INTO statement, so it produces nothing",
        ));
    }
    // Several INSERTs form a statement set: one job, planned statement by statement.
    let inserts = inserts
        .iter()
        .map(|(sink, spos, query)| planner::plan_insert(&tables, (sink, *spos), &views, query, opts, &settings))
        .collect::<Result<Vec<_>>>()?;
    Ok(Pipeline { fingerprint, inserts, opts: opts.clone(), explain_only: explain })
}

impl Pipeline {
    /// A pipeline planned by other means than SQL (the Rust API). `fingerprint` must change
    /// whenever the meaning of the pipeline changes, so that state is never restored into a
    /// different pipeline.
    pub fn from_plan(insert: InsertPlan, opts: &PipelineOptions, fingerprint: String) -> Pipeline {
        Pipeline { fingerprint, inserts: vec![insert], opts: opts.clone(), explain_only: false }
    }

    fn builders(&self) -> impl Iterator<Item = InsertBuilder<'_>> {
        self.inserts.iter().enumerate().map(|(i, ins)| InsertBuilder {
            ins,
            opts: &self.opts,
            prefix: if i == 0 { String::new() } else { format!("i{i}-") },
        })
    }

    /// The streaming plan in words, INSERT by INSERT.
    pub fn explain(&self) -> String {
        let parts: Vec<String> = self.builders().map(|b| b.explain()).collect();
        if parts.len() == 1 {
            return parts.into_iter().next().unwrap_or_default();
        }
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| format!("INSERT {} of {}:\n{p}", i + 1, parts.len()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Each sink's name and delivery guarantee.
    pub fn sink_guarantees(&self) -> Vec<(String, &'static str)> {
        self.builders().map(|b| b.sink_guarantee()).collect()
    }

    /// True when every source ends by itself (a nexmark table with 'events.num'), so the job
    /// finishes like a `--bounded` one.
    pub fn sources_bounded(&self) -> bool {
        self.builders().all(|b| b.sources_bounded())
    }

    /// Checks that the sources can be read before any job state is created.
    pub fn check_sources(&self) -> Result<()> {
        self.builders().try_for_each(|b| b.check_sources())
    }

    /// Resolves sources (recording first-start facts in the job file) and builds the job graph:
    /// the stages of every INSERT, side by side in one job.
    pub fn build_graph(&self, job: &mut JobDir) -> Result<JobGraph> {
        let mut stages = vec![];
        for b in self.builders() {
            let first = stages.len();
            stages.extend(b.stages(job, first)?);
        }
        Ok(JobGraph { stages })
    }
}
