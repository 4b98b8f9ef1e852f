//! Arrow IPC encoding of state tables. The IPC stream format is Arrow's stable, versioned
//! format, so state written by one Keel version opens in the next.

use crate::{Result, StateError};
use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

/// Encodes one batch as an Arrow IPC stream.
pub fn batch_to_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    write_stream(Vec::new(), batch.schema_ref(), std::iter::once(Ok::<_, String>(batch.clone())))
}

/// Writes the chunks as one IPC stream into `out`, and returns it.
fn write_stream<W: std::io::Write, E: std::fmt::Display>(
    mut out: W,
    schema: &arrow::datatypes::SchemaRef,
    chunks: impl Iterator<Item = std::result::Result<RecordBatch, E>>,
) -> Result<W> {
    let mut w = StreamWriter::try_new(&mut out, schema).map_err(|e| StateError::Encode(e.to_string()))?;
    for chunk in chunks {
        let chunk = chunk.map_err(|e| StateError::Encode(e.to_string()))?;
        w.write(&chunk).map_err(|e| StateError::Encode(e.to_string()))?;
    }
    w.finish().map_err(|e| StateError::Encode(e.to_string()))?;
    drop(w);
    Ok(out)
}

/// Bytes written in pieces of about this size: a large state is never one growing buffer (copied
/// again each time it doubles) nor one allocation of its whole size.
const PIECE: usize = 8 << 20;

/// A `Write` that keeps what it is given as pieces of about `PIECE` bytes.
struct Pieces(Vec<Vec<u8>>);

impl std::io::Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.last_mut() {
            Some(last) if last.len() + buf.len() <= PIECE => last.extend_from_slice(buf),
            // The first piece grows as usual (most states are small); once a state is larger than
            // a piece, each further piece is allocated whole.
            None => self.0.push(buf.to_vec()),
            Some(_) => {
                let mut piece = Vec::with_capacity(PIECE.max(buf.len()));
                piece.extend_from_slice(buf);
                self.0.push(piece);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes the batches `chunks` yields (all of `schema`) as one Arrow IPC stream, one message per
/// chunk, so that a large state is never gathered into one batch before it is encoded; the
/// stream comes as pieces whose concatenation it is (for checkpoint files written piece by
/// piece, `CheckpointWriter::put_pieces`). `batch_from_ipc` reads it back as one batch.
pub fn batches_to_ipc_pieces<E: std::fmt::Display>(
    schema: &arrow::datatypes::SchemaRef,
    chunks: impl Iterator<Item = std::result::Result<RecordBatch, E>>,
) -> Result<Vec<Vec<u8>>> {
    Ok(write_stream(Pieces(vec![]), schema, chunks)?.0)
}

/// Decodes an Arrow IPC stream written by `batch_to_ipc` or `batches_to_ipc_pieces` (all its
/// batches, concatenated).
pub fn batch_from_ipc(bytes: &[u8], context: &str) -> Result<RecordBatch> {
    let err = |e: arrow::error::ArrowError| StateError::Decode { context: context.to_string(), reason: e.to_string() };
    let reader = StreamReader::try_new(bytes, None).map_err(err)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(err)?;
    arrow::compute::concat_batches(&schema, &batches).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn roundtrip() {
        let b = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(vec!["a", "b"])) as _),
            ("v", Arc::new(Int64Array::from(vec![1, 2])) as _),
        ])
        .unwrap();
        let bytes = batch_to_ipc(&b).unwrap();
        assert_eq!(batch_from_ipc(&bytes, "test").unwrap(), b);
        assert!(batch_from_ipc(&bytes[..bytes.len() / 2], "test").is_err());
        // In chunks, read back as the one batch.
        let chunks = (0..2).map(|i| Ok::<_, String>(b.slice(i, 1)));
        let bytes = batches_to_ipc_pieces(&b.schema(), chunks).unwrap().concat();
        assert_eq!(batch_from_ipc(&bytes, "test").unwrap(), b);
        let none =
            batches_to_ipc_pieces(&b.schema(), std::iter::empty::<Result<RecordBatch, String>>()).unwrap().concat();
        assert_eq!(batch_from_ipc(&none, "test").unwrap().num_rows(), 0, "no chunk reads back as no rows");
        let failing = [Ok(b.slice(0, 1)), Err("no more".to_string())].into_iter();
        assert!(batches_to_ipc_pieces(&b.schema(), failing).is_err());
        // A stream larger than a piece is several pieces.
        let big = RecordBatch::try_from_iter(vec![(
            "v",
            Arc::new(Int64Array::from_iter_values(0..(PIECE as i64 / 8 * 3 / 2))) as _,
        )])
        .unwrap();
        let pieces = batches_to_ipc_pieces(&big.schema(), [Ok::<_, String>(big.clone())].into_iter()).unwrap();
        assert!(pieces.len() >= 2, "{} pieces", pieces.len());
        assert_eq!(batch_from_ipc(&pieces.concat(), "test").unwrap(), big);
    }
}
