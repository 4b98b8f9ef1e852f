//! Reading one Parquet file for the filesystem source, from a given row on, conformed to the
//! table's schema.
//!
//! Invariants: columns are matched to the table's by name (the file's column order does not
//! matter); a table column the file lacks reads as NULL if it is nullable and is an error naming
//! the file and column if it is NOT NULL; a file column of another type is cast to the table's
//! type, refused up front (naming file, column and both types) when Arrow cannot cast it, and a
//! value that does not survive the cast fails the read instead of turning into NULL. Reading
//! from row `r` returns exactly the rows `r..` of the file in file order, so a position counted
//! in rows neither skips nor repeats one on restore.

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::SchemaRef;
use keel_runtime::{Result, RuntimeError};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use std::path::Path;

/// Rows per batch read from a Parquet file.
pub(crate) const PARQUET_BATCH_ROWS: usize = 8192;

/// Why a Parquet file could not be opened.
pub(crate) enum OpenError {
    /// The file's footer could not be read: not Parquet, damaged, or (when watching a directory)
    /// perhaps still being written.
    Unreadable(String),
    /// Anything else (I/O, a schema that does not fit the table).
    Other(RuntimeError),
}

/// Where each table column comes from.
enum Column {
    /// The file's column of this name, cast when its type differs.
    File { name: String, cast: bool },
    /// Absent from the file: NULLs.
    Null,
}

/// An open Parquet file positioned at a row, yielding batches of the table's schema.
pub(crate) struct ParquetCursor {
    reader: Option<ParquetRecordBatchReader>,
    columns: Vec<Column>,
    schema: SchemaRef,
    path: String,
}

impl ParquetCursor {
    /// Opens `path` and positions it after its first `rows_done` rows.
    pub(crate) fn open(path: &Path, table: &str, schema: &SchemaRef, rows_done: u64) -> Result<Self, OpenError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| {
            OpenError::Other(RuntimeError::External(format!("table '{table}': cannot open {shown}: {e}")))
        })?;
        // The parquet reader panics on some malformed files (an embedded Arrow schema it cannot
        // convert, found by fuzzing): such a file is unreadable, like one it refuses.
        let builder =
            keel_types::guard::no_panic("the Parquet reader", || ParquetRecordBatchReaderBuilder::try_new(file))
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| {
                    OpenError::Unreadable(format!("table '{table}': {shown} is not a readable Parquet file: {e}"))
                })?;
        let file_schema = builder.schema().clone();
        let mut roots = vec![];
        let mut columns = vec![];
        for field in schema.fields() {
            match file_schema.index_of(field.name()) {
                Ok(i) => {
                    let from = file_schema.field(i).data_type();
                    if from != field.data_type() && !can_cast_types(from, field.data_type()) {
                        return Err(OpenError::Other(RuntimeError::User(format!(
                            "table '{table}': column '{}' of Parquet file {shown} is {from}, which cannot be cast \
                             to the table's type {}",
                            field.name(),
                            field.data_type()
                        ))));
                    }
                    roots.push(i);
                    columns.push(Column::File { name: field.name().clone(), cast: from != field.data_type() });
                }
                Err(_) if field.is_nullable() => columns.push(Column::Null),
                Err(_) => {
                    return Err(OpenError::Other(RuntimeError::User(format!(
                        "table '{table}': Parquet file {shown} has no column '{}', which the table declares NOT NULL \
                         (the file's columns: {})",
                        field.name(),
                        file_schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                    ))));
                }
            }
        }
        // The row group holding row `rows_done`, and how many of its rows were already read.
        let mut first_group = None;
        let mut before = 0u64;
        for (g, rg) in builder.metadata().row_groups().iter().enumerate() {
            let n = u64::try_from(rg.num_rows()).unwrap_or(0);
            if rows_done < before + n {
                first_group = Some((g, rows_done - before));
                break;
            }
            before += n;
        }
        let reader = match first_group {
            None => None,
            Some((g, skip)) => {
                let groups = (g..builder.metadata().num_row_groups()).collect();
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                let builder = builder.with_projection(mask).with_row_groups(groups).with_batch_size(PARQUET_BATCH_ROWS);
                let builder = if skip > 0 { builder.with_offset(skip as usize) } else { builder };
                Some(
                    keel_types::guard::no_panic("the Parquet reader", || builder.build())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                        .map_err(|e| {
                            OpenError::Other(RuntimeError::User(format!("table '{table}': cannot read {shown}: {e}")))
                        })?,
                )
            }
        };
        Ok(ParquetCursor { reader, columns, schema: schema.clone(), path: shown })
    }

    /// The next rows in file order, conformed to the table's schema; `None` at the end.
    pub(crate) fn next_batch(&mut self, table: &str) -> Result<Option<RecordBatch>> {
        let Some(reader) = self.reader.as_mut() else { return Ok(None) };
        let next = keel_types::guard::no_panic("the Parquet reader", || reader.next()).map_err(|e| {
            self.reader = None;
            RuntimeError::User(format!("table '{table}': cannot read {}: {e}", self.path))
        })?;
        let batch = match next {
            None => {
                self.reader = None;
                return Ok(None);
            }
            Some(b) => b.map_err(|e| RuntimeError::User(format!("table '{table}': cannot read {}: {e}", self.path)))?,
        };
        let n = batch.num_rows();
        let strict = CastOptions { safe: false, ..Default::default() };
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (field, source) in self.schema.fields().iter().zip(&self.columns) {
            let col = match source {
                Column::Null => new_null_array(field.data_type(), n),
                Column::File { name, cast } => {
                    // Invariant: the projection kept every column named in `columns`.
                    let col = batch.column_by_name(name).ok_or_else(|| {
                        RuntimeError::Internal(format!("projected Parquet column '{name}' is missing"))
                    })?;
                    if *cast {
                        cast_with_options(col, field.data_type(), &strict).map_err(|e| {
                            RuntimeError::User(format!(
                                "table '{table}': a value of column '{name}' of Parquet file {} does not fit the \
                                 table's type {}: {e}",
                                self.path,
                                field.data_type()
                            ))
                        })?
                    } else {
                        col.clone()
                    }
                }
            };
            if !field.is_nullable() && col.null_count() > 0 {
                return Err(RuntimeError::User(format!(
                    "table '{table}': column '{}' of Parquet file {} holds NULLs, but the table declares it NOT NULL",
                    field.name(),
                    self.path
                )));
            }
            cols.push(col);
        }
        RecordBatch::try_new(self.schema.clone(), cols).map(Some).map_err(RuntimeError::arrow("Parquet rows"))
    }
}
