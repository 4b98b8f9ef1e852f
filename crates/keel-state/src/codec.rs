//! Arrow IPC encoding of state tables. The IPC stream format is Arrow's stable, versioned
//! format, so state written by one Keel version opens in the next.

use crate::{Result, StateError, StateOut};
use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

/// Encodes one batch as an Arrow IPC stream.
pub fn batch_to_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_batches(&mut out, batch.schema_ref(), std::iter::once(Ok::<_, String>(batch.clone())))?;
    Ok(out)
}

/// Writes the chunks as one IPC stream into `out`, and returns it.
fn write_stream<W: std::io::Write, E: std::fmt::Display>(
    mut out: W,
    schema: &arrow::datatypes::SchemaRef,
    chunks: impl Iterator<Item = std::result::Result<RecordBatch, E>>,
) -> std::result::Result<W, StreamError<E>> {
    let mut w = StreamWriter::try_new(&mut out, schema).map_err(StreamError::Arrow)?;
    for chunk in chunks {
        w.write(&chunk.map_err(StreamError::Chunk)?).map_err(StreamError::Arrow)?;
    }
    w.finish().map_err(StreamError::Arrow)?;
    drop(w);
    Ok(out)
}

/// Why a stream could not be written: the writer failed, or a chunk could not be made.
enum StreamError<E> {
    Arrow(arrow::error::ArrowError),
    Chunk(E),
}

/// Encodes the batches `chunks` yields (all of `schema`) as one Arrow IPC stream, one message per
/// chunk, written into `out` as it is encoded: a large state is never gathered into one batch,
/// nor held whole as bytes. `batch_from_ipc` reads it back as one batch. A failed write is an
/// I/O error naming `out`'s file.
pub fn write_batches<E: std::fmt::Display>(
    out: &mut dyn StateOut,
    schema: &arrow::datatypes::SchemaRef,
    chunks: impl Iterator<Item = std::result::Result<RecordBatch, E>>,
) -> Result<()> {
    let path = out.path().to_path_buf();
    match write_stream(&mut *out, schema, chunks) {
        Ok(_) => Ok(()),
        Err(StreamError::Arrow(arrow::error::ArrowError::IoError(_, source))) => {
            Err(StateError::Io { action: "cannot write state to", path, source })
        }
        Err(StreamError::Arrow(e)) => Err(StateError::Encode(e.to_string())),
        Err(StreamError::Chunk(e)) => Err(StateError::Encode(e.to_string())),
    }
}

/// How a decoding error of the state `context` names is reported.
fn decode_error(context: &str) -> impl Fn(arrow::error::ArrowError) -> StateError + use<> {
    let context = context.to_string();
    move |e| StateError::Decode { context: context.clone(), reason: e.to_string() }
}

/// Decodes an Arrow IPC stream written by `batch_to_ipc` or `write_batches`: its batches, one per
/// chunk written, each decoded only when the iterator reaches it and never concatenated, so that
/// a restored state of GBs is not held twice.
pub fn batches_from_ipc<'a>(bytes: &'a [u8], context: &str) -> Result<impl Iterator<Item = Result<RecordBatch>> + 'a> {
    let err = decode_error(context);
    let panicked = panic_error(context);
    // arrow-ipc panics on some malformed schemas (found by fuzzing): that is a decoding error.
    let mut reader = keel_types::guard::no_panic("the Arrow IPC reader", || StreamReader::try_new(bytes, None))
        .map_err(&panicked)?
        .map_err(&err)?;
    Ok(std::iter::from_fn(move || match keel_types::guard::no_panic("the Arrow IPC reader", || reader.next()) {
        Ok(next) => next.map(|b| b.map_err(&err)),
        Err(e) => Some(Err(panicked(e))),
    }))
}

/// A decoding error from the message of a panic the guard caught.
fn panic_error(context: &str) -> impl Fn(String) -> StateError + use<> {
    let context = context.to_string();
    move |reason| StateError::Decode { context: context.clone(), reason }
}

/// `batches_from_ipc`, concatenated into one batch (for small states).
pub fn batch_from_ipc(bytes: &[u8], context: &str) -> Result<RecordBatch> {
    let err = decode_error(context);
    let reader = keel_types::guard::no_panic("the Arrow IPC reader", || StreamReader::try_new(bytes, None))
        .map_err(panic_error(context))?
        .map_err(&err)?;
    let schema = reader.schema();
    let batches = batches_from_ipc(bytes, context)?.collect::<Result<Vec<_>>>()?;
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
        let write = |chunks: Vec<Result<RecordBatch, String>>| {
            let mut out = Vec::new();
            write_batches(&mut out, &b.schema(), chunks.into_iter()).map(|_| out)
        };
        let bytes = write((0..2).map(|i| Ok(b.slice(i, 1))).collect()).unwrap();
        assert_eq!(batch_from_ipc(&bytes, "test").unwrap(), b);
        let chunks: Vec<RecordBatch> = batches_from_ipc(&bytes, "test").unwrap().map(Result::unwrap).collect();
        assert_eq!(chunks, vec![b.slice(0, 1), b.slice(1, 1)], "one per chunk");
        let none = write(vec![]).unwrap();
        assert_eq!(batch_from_ipc(&none, "test").unwrap().num_rows(), 0, "no chunk reads back as no rows");
        let err = write(vec![Ok(b.slice(0, 1)), Err("no more".to_string())]).unwrap_err().to_string();
        assert!(err.contains("no more"), "{err}");
    }

    #[test]
    fn a_failed_write_is_an_io_error_naming_the_file() {
        let b = RecordBatch::try_from_iter(vec![("v", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut out = crate::StateFileWriter::new("s", dir.path().join("no-such-dir").join("s"));
        let err = write_batches(&mut out, &b.schema(), std::iter::once(Ok::<_, String>(b.clone()))).unwrap_err();
        assert!(matches!(err, StateError::Io { .. }), "{err:?}");
        assert_eq!(err.class(), keel_types::ErrorClass::External);
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}
