//! Where an operator writes its snapshot: straight into its state file in the checkpoint's
//! directory (`StateFileWriter`), or into memory (`Vec<u8>`, for tests and callers that want the
//! bytes). Writing into the file as the state is encoded means a state of GBs is never held whole
//! in memory a second time, and the encoding buffer is reused rather than freshly faulted in.
//!
//! Invariants:
//! - a state file is created on its first write, so an operator with no state leaves no file;
//! - the size and CRC32C `finish` reports are those of the bytes in the file, including bytes set
//!   aside by `set_aside` and written later by `fill` (the CRC is combined from the stretches
//!   between such holes, so nothing is read back);
//! - `finish` does not fsync: the coordinator fsyncs each file before the manifest names it
//!   (`CheckpointWriter::adopt`), so that tasks never wait for the disk.

use crate::ManifestFile;
use crate::{Result, StateError};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A snapshot's destination (see the module comment).
pub trait StateOut: Write {
    /// Writes `n` zero bytes to be overwritten later by `fill` (a header whose contents are known
    /// only once what follows is written); returns where they start.
    fn set_aside(&mut self, n: usize) -> std::io::Result<u64>;
    /// Overwrites the bytes that `set_aside` set aside at `at` (exactly as many).
    fn fill(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()>;
    /// What errors name: the file's path, or `memory`.
    fn path(&self) -> &Path;
}

impl StateOut for Vec<u8> {
    fn set_aside(&mut self, n: usize) -> std::io::Result<u64> {
        let at = self.len() as u64;
        self.resize(self.len() + n, 0);
        Ok(at)
    }
    fn fill(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        let at = at as usize;
        match self.get_mut(at..at + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "fill past the end of a state")),
        }
    }
    fn path(&self) -> &Path {
        Path::new("memory")
    }
}

/// Bytes buffered before a write to the file; larger writes (most of a state's column buffers)
/// go straight through.
const BUFFER: usize = 1 << 20;

/// One stretch of a state file, for its CRC: stretches written in order, and holes filled later.
struct Stretch {
    start: u64,
    len: u64,
    crc: u32,
    hole: bool,
}

/// Writes one state file of a checkpoint (see the module comment).
pub struct StateFileWriter {
    name: String,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    size: u64,
    stretches: Vec<Stretch>,
}

/// `e`, with `path` in its message.
fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The open file, created on first use.
fn open<'a>(file: &'a mut Option<BufWriter<File>>, path: &Path) -> std::io::Result<&'a mut BufWriter<File>> {
    if file.is_none() {
        let f = File::create(path).map_err(|e| named(path, e))?;
        *file = Some(BufWriter::with_capacity(BUFFER, f));
    }
    file.as_mut().ok_or_else(|| std::io::Error::other("state file not open"))
}

impl StateFileWriter {
    pub(crate) fn new(name: &str, path: PathBuf) -> Self {
        StateFileWriter { name: name.to_string(), path, file: None, size: 0, stretches: vec![] }
    }

    fn account(&mut self, bytes: &[u8], hole: bool) {
        match self.stretches.last_mut() {
            Some(last) if !last.hole && !hole => {
                last.crc = crc32c::crc32c_append(last.crc, bytes);
                last.len += bytes.len() as u64;
            }
            _ => self.stretches.push(Stretch {
                start: self.size,
                len: bytes.len() as u64,
                crc: crc32c::crc32c(bytes),
                hole,
            }),
        }
        self.size += bytes.len() as u64;
    }

    /// Flushes the file and says what the manifest records of it; `None` when nothing was
    /// written (no file exists).
    pub fn finish(mut self) -> Result<Option<ManifestFile>> {
        let Some(mut file) = self.file.take() else { return Ok(None) };
        file.flush().map_err(StateError::io("cannot write", &self.path))?;
        let crc = self.stretches.iter().fold(0u32, |crc, s| crc32c::crc32c_combine(crc, s.crc, s.len as usize));
        Ok(Some(ManifestFile { name: self.name, size: self.size, crc32c: crc }))
    }
}

impl Write for StateFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = open(&mut self.file, &self.path)?.write(buf).map_err(|e| named(&self.path, e))?;
        self.account(&buf[..n], false);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush().map_err(|e| named(&self.path, e)),
            None => Ok(()),
        }
    }
}

impl StateOut for StateFileWriter {
    fn set_aside(&mut self, n: usize) -> std::io::Result<u64> {
        let zeros = vec![0u8; n];
        let at = self.size;
        open(&mut self.file, &self.path)?.write_all(&zeros).map_err(|e| named(&self.path, e))?;
        self.account(&zeros, true);
        Ok(at)
    }

    fn fill(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        let Some(hole) = self.stretches.iter_mut().find(|s| s.hole && s.start == at && s.len == bytes.len() as u64)
        else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "fill of bytes not set aside by set_aside",
            ));
        };
        hole.crc = crc32c::crc32c(bytes);
        let path = &self.path;
        let f = open(&mut self.file, path)?;
        f.flush().map_err(|e| named(path, e))?;
        let inner = f.get_mut();
        inner.seek(SeekFrom::Start(at)).map_err(|e| named(path, e))?;
        inner.write_all(bytes).map_err(|e| named(path, e))?;
        inner.seek(SeekFrom::End(0)).map_err(|e| named(path, e))?;
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// A `StateOut` that counts the bytes written through it (the length of one part of a state,
/// to be filled in ahead of it).
pub struct Counted<'a> {
    out: &'a mut dyn StateOut,
    written: u64,
}

impl<'a> Counted<'a> {
    pub fn new(out: &'a mut dyn StateOut) -> Self {
        Counted { out, written: 0 }
    }
    /// Bytes written (and set aside) through this so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl StateOut for Counted<'_> {
    fn set_aside(&mut self, n: usize) -> std::io::Result<u64> {
        let at = self.out.set_aside(n)?;
        self.written += n as u64;
        Ok(at)
    }
    fn fill(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.out.fill(at, bytes)
    }
    fn path(&self) -> &Path {
        self.out.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_crc_match_the_file_with_a_filled_hole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut w = StateFileWriter::new("s", path.clone());
        w.write_all(b"head:").unwrap();
        let at = w.set_aside(8).unwrap();
        w.write_all(&vec![7u8; 3 * BUFFER]).unwrap();
        w.write_all(b"tail").unwrap();
        w.fill(at, &42u64.to_le_bytes()).unwrap();
        assert!(w.fill(at + 1, &[1; 8]).is_err(), "only a reserved stretch can be filled");
        let f = w.finish().unwrap().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(f.size, bytes.len() as u64);
        assert_eq!(f.crc32c, crc32c::crc32c(&bytes));
        assert_eq!(&bytes[5..13], &42u64.to_le_bytes());
        assert!(bytes.ends_with(b"tail"));

        let mut mem = Vec::new();
        mem.write_all(b"head:").unwrap();
        let at = mem.set_aside(8).unwrap();
        mem.write_all(&vec![7u8; 3 * BUFFER]).unwrap();
        mem.write_all(b"tail").unwrap();
        mem.fill(at, &42u64.to_le_bytes()).unwrap();
        assert_eq!(mem, bytes, "memory and file hold the same bytes");
    }

    #[test]
    fn counted_counts_what_goes_through() {
        let mut mem = Vec::new();
        mem.write_all(b"xy").unwrap();
        let mut c = Counted::new(&mut mem);
        c.write_all(b"abc").unwrap();
        let at = c.set_aside(4).unwrap();
        assert_eq!((c.written(), at), (7, 5));
        c.fill(at, b"1234").unwrap();
        assert_eq!(mem, b"xyabc1234");
    }

    #[test]
    fn nothing_written_leaves_no_file_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        assert!(StateFileWriter::new("empty", path.clone()).finish().unwrap().is_none());
        assert!(!path.exists());
        let mut w = StateFileWriter::new("x", dir.path().join("missing-dir").join("x"));
        let err = w.write_all(b"abc").unwrap_err().to_string();
        assert!(err.contains("missing-dir"), "{err}");
    }
}
