//! Options of the generator sources (`datagen`, and the batch size of `nexmark`): counts and
//! rates may be as large as wanted (they size no single value), while the options that size one
//! value or one batch are bounded, so a table's options cannot make a batch exhaust memory.
//!
//! Invariant: a refused option names the option, its value, its place and the limit.

use crate::connectors::{SourcePlan, option_pos};
use crate::error::{Pos, Result, SqlError};
use crate::script::TableDef;
use keel_connectors::datagen::MAX_STRING_LENGTH;

/// The most rows a generator puts in one batch ('rows-per-batch'): 65,536. A batch is built
/// whole before it is passed on; the default is 8,192.
pub const MAX_ROWS_PER_BATCH: u64 = 1 << 16;

/// 'rows-per-batch' (default 8,192; 0 means 1), at most `MAX_ROWS_PER_BATCH`.
pub(crate) fn rows_per_batch(def: &TableDef) -> Result<usize> {
    let Some(v) = def.option("rows-per-batch") else { return Ok(8192) };
    let pos = option_pos(def, "rows-per-batch");
    let n = v
        .replace('_', "")
        .parse::<u64>()
        .map_err(|_| SqlError::invalid(pos, format!("'rows-per-batch' = '{v}' is not a whole number")))?;
    if n > MAX_ROWS_PER_BATCH {
        return Err(SqlError::invalid(
            pos,
            format!("'rows-per-batch' = '{v}' is over the limit of {MAX_ROWS_PER_BATCH} rows per batch"),
        ));
    }
    Ok(n.max(1) as usize)
}

/// A datagen 'fields.COLUMN.length': a whole number of characters up to `MAX_STRING_LENGTH`.
fn string_length(key: &str, v: &str, pos: Pos) -> Result<usize> {
    let n = v
        .replace('_', "")
        .parse::<u64>()
        .map_err(|_| SqlError::invalid(pos, format!("option '{key}' = '{v}' is not a whole number of characters")))?;
    if n > MAX_STRING_LENGTH as u64 {
        return Err(SqlError::invalid(
            pos,
            format!(
                "option '{key}' = '{v}' is over the limit of {MAX_STRING_LENGTH} characters (1 MiB) for one \
                 generated string"
            ),
        ));
    }
    Ok(n as usize)
}

pub(crate) fn datagen_plan(def: &TableDef) -> Result<SourcePlan> {
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
                "length" => fields[i].length = Some(string_length(k, v, *pos)?),
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
        batch_size: rows_per_batch(def)?,
    }))
}
