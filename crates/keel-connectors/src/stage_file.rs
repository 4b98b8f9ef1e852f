//! The file format of a staged sink transaction (`staging.rs`): records written between two
//! barriers, read back when the checkpoint completes and committed to a topic.
//!
//! Version 2 (`*.stage2`): `MAGIC`, then per record `key_len i32 (-1: none) | key | value_len u32
//! | value | crc32c u32` (over the record's bytes before it), then a footer `i32::MIN | records
//! u64 | crc32c u32` (over the count). Version 1 (`*.stage`, Keel 0.1): the records without
//! magic, checksums or footer.
//!
//! Invariants: a version-2 file is accepted only whole: with its magic, every record's CRC, and
//! a footer whose count is the number of records read and after which the file ends, so a file
//! cut short (even at a record boundary), a flipped byte or a damaged magic is reported as
//! damage, never committed in part. Which version a file is comes from its name, not from its
//! (damageable) bytes. Lengths are bounded by `keel_log::MAX_RECORD_BYTES` before anything is
//! allocated for them.

use keel_log::Record;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// The first bytes of a version-2 file.
const MAGIC: &[u8; 8] = b"KSTG\x02\0\0\0";
/// The key length that marks the footer.
const FOOTER: i32 = i32::MIN;

/// The formats, by file name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// `.stage`: Keel 0.1, no checksums.
    V1,
    /// `.stage2`: checksummed, with a footer.
    V2,
}

impl Version {
    pub fn suffix(self) -> &'static str {
        match self {
            Version::V1 => ".stage",
            Version::V2 => ".stage2",
        }
    }

    /// The version a staged file's name says (`None`: not a staged file).
    pub fn of(name: &str) -> Option<(Version, &str)> {
        if let Some(stem) = name.strip_suffix(".stage2") {
            Some((Version::V2, stem))
        } else {
            name.strip_suffix(".stage").map(|stem| (Version::V1, stem))
        }
    }
}

/// Writes a version-2 staged file: records, then the footer when finished.
pub(crate) struct StageWriter {
    out: BufWriter<File>,
    records: u64,
}

impl StageWriter {
    pub fn create(file: File) -> std::io::Result<StageWriter> {
        let mut out = BufWriter::with_capacity(256 << 10, file);
        out.write_all(MAGIC)?;
        Ok(StageWriter { out, records: 0 })
    }

    pub fn write(&mut self, key: Option<&[u8]>, value: &[u8]) -> std::io::Result<()> {
        let klen = key.map_or(-1i32, |k| k.len() as i32).to_le_bytes();
        let vlen = (value.len() as u32).to_le_bytes();
        let mut crc = crc32c::crc32c(&klen);
        self.out.write_all(&klen)?;
        if let Some(k) = key {
            crc = crc32c::crc32c_append(crc, k);
            self.out.write_all(k)?;
        }
        crc = crc32c::crc32c_append(crc, &vlen);
        crc = crc32c::crc32c_append(crc, value);
        self.out.write_all(&vlen)?;
        self.out.write_all(value)?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.records += 1;
        Ok(())
    }

    /// Writes the footer and flushes; the caller fsyncs the file.
    pub fn finish(mut self) -> std::io::Result<File> {
        let count = self.records.to_le_bytes();
        self.out.write_all(&FOOTER.to_le_bytes())?;
        self.out.write_all(&count)?;
        self.out.write_all(&crc32c::crc32c(&count).to_le_bytes())?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Reads the records of a staged file in order; errors describe the damage and where it is.
pub(crate) struct StageReader {
    input: BufReader<File>,
    version: Version,
    position: u64,
    records: u64,
    done: bool,
}

impl StageReader {
    pub fn open(path: &Path, version: Version) -> Result<StageReader, String> {
        let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut position = 0;
        if version == Version::V2 {
            let mut head = [0u8; 8];
            input.read_exact(&mut head).map_err(|e| format!("it is too short for its header ({e})"))?;
            if &head != MAGIC {
                return Err("its header is not a staged file's".into());
            }
            position = MAGIC.len() as u64;
        }
        Ok(StageReader { input, version, position, records: 0, done: false })
    }

    fn exact(&mut self, buf: &mut [u8], what: &str, at: u64) -> Result<(), String> {
        self.input.read_exact(buf).map_err(|e| format!("{what} cut short at byte {at} ({e})"))
    }

    /// The next record; `None` at the end (for version 2, only after a valid footer).
    pub fn next_record(&mut self) -> Result<Option<Record>, String> {
        if self.done {
            return Ok(None);
        }
        let at = self.position;
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.input.read(&mut len[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot read at byte {at}: {e}")),
            }
        }
        if got == 0 && self.version == Version::V1 {
            self.done = true;
            return Ok(None);
        }
        if got < 4 {
            return Err(format!("it ends at byte {} without its footer", at + got as u64));
        }
        let kl = i32::from_le_bytes(len);
        if kl == FOOTER && self.version == Version::V2 {
            return self.footer(at).map(|()| None);
        }
        let mut crc = crc32c::crc32c(&len);
        let bound = keel_log::MAX_RECORD_BYTES;
        let key = if kl < 0 {
            None
        } else {
            if kl as u64 > bound {
                return Err(format!("a key length of {kl} bytes at byte {at}"));
            }
            let mut k = vec![0u8; kl as usize];
            self.exact(&mut k, "a key", at)?;
            crc = crc32c::crc32c_append(crc, &k);
            Some(k)
        };
        self.exact(&mut len, "a record", at)?;
        crc = crc32c::crc32c_append(crc, &len);
        let vl = u32::from_le_bytes(len);
        if u64::from(vl) > bound {
            return Err(format!("a value length of {vl} bytes at byte {at}"));
        }
        let mut v = vec![0u8; vl as usize];
        self.exact(&mut v, "a value", at)?;
        crc = crc32c::crc32c_append(crc, &v);
        self.position += 8 + key.as_ref().map_or(0, Vec::len) as u64 + u64::from(vl);
        if self.version == Version::V2 {
            self.exact(&mut len, "a record's checksum", at)?;
            if u32::from_le_bytes(len) != crc {
                return Err(format!("the record at byte {at} fails its CRC32C"));
            }
            self.position += 4;
        }
        self.records += 1;
        Ok(Some(Record::new(key, v)))
    }

    /// Checks the footer at byte `at` (its marker read) and that the file ends after it.
    fn footer(&mut self, at: u64) -> Result<(), String> {
        let mut count = [0u8; 8];
        let mut crc = [0u8; 4];
        self.exact(&mut count, "the footer", at)?;
        self.exact(&mut crc, "the footer", at)?;
        if crc32c::crc32c(&count) != u32::from_le_bytes(crc) {
            return Err(format!("its footer at byte {at} fails its CRC32C"));
        }
        let said = u64::from_le_bytes(count);
        if said != self.records {
            return Err(format!("its footer says {said} records, {} were read", self.records));
        }
        let mut rest = [0u8; 1];
        if self.input.read(&mut rest).map_err(|e| e.to_string())? != 0 {
            return Err(format!("bytes follow its footer at byte {}", at + 16));
        }
        self.done = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, records: &[(Option<&[u8]>, &[u8])]) {
        let mut w = StageWriter::create(File::create(path).unwrap()).unwrap();
        for (k, v) in records {
            w.write(*k, v).unwrap();
        }
        w.finish().unwrap();
    }

    fn read(path: &Path, version: Version) -> Result<Vec<Record>, String> {
        let mut r = StageReader::open(path, version)?;
        let mut out = vec![];
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.stage2");
        write(&path, &[(Some(b"k"), b"one"), (None, b""), (None, b"three")]);
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(read(&path, Version::V2).unwrap().len(), 3);
        for cut in 0..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert!(read(&path, Version::V2).is_err(), "a file cut at byte {cut} was accepted");
        }
        for at in 0..whole.len() {
            let mut bytes = whole.clone();
            bytes[at] ^= 0x08;
            std::fs::write(&path, &bytes).unwrap();
            assert!(read(&path, Version::V2).is_err(), "a flip at byte {at} was accepted");
        }
        let mut longer = whole.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(read(&path, Version::V2).unwrap_err().contains("follow its footer"));
        write(&path, &[]);
        assert!(read(&path, Version::V2).unwrap().is_empty(), "an empty transaction is whole");
    }

    #[test]
    fn version_1_files_read_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.stage");
        let mut old = (-1i32).to_le_bytes().to_vec();
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(b"{}");
        std::fs::write(&path, &old).unwrap();
        assert_eq!(read(&path, Version::V1).unwrap(), vec![Record::new(None, b"{}".to_vec())]);
        assert_eq!(Version::of("txn-1-p0.stage"), Some((Version::V1, "txn-1-p0")));
        assert_eq!(Version::of("txn-1-p0.stage2"), Some((Version::V2, "txn-1-p0")));
    }
}
