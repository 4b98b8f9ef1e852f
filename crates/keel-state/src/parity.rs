//! Parity of a checkpoint's state files, so that any one of them that is damaged or lost can be
//! rebuilt (RAID 4's idea, over files): `_parity` is the XOR of every state file, each padded
//! with zeros to the longest one's length.
//!
//! Invariants: the parity is written and fsynced before the manifest names it (with its size and
//! CRC32C), so a complete checkpoint's parity matches its files as the manifest records them; a
//! rebuilt file is used only if its size and CRC32C are the manifest's, and it replaces the
//! damaged one atomically (written beside it, fsynced, renamed), the damaged bytes kept in
//! `_damaged/`. Memory stays at two blocks of `BLOCK` bytes whatever the states' sizes.

use crate::{ManifestFile, Result, StateError};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The parity file's name in a checkpoint's directory.
pub(crate) const PARITY: &str = "_parity";
/// Bytes read from each file, and XORed, at a time.
const BLOCK: usize = 1 << 20;

/// XORs `src` into `acc` (equal lengths), eight bytes at a time.
fn xor_into(acc: &mut [u8], src: &[u8]) {
    debug_assert_eq!(acc.len(), src.len());
    let mut a = acc.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (x, y) in (&mut a).zip(&mut s) {
        let v =
            u64::from_ne_bytes((&*x).try_into().expect("8 bytes")) ^ u64::from_ne_bytes(y.try_into().expect("8 bytes"));
        x.copy_from_slice(&v.to_ne_bytes());
    }
    for (x, y) in a.into_remainder().iter_mut().zip(s.remainder()) {
        *x ^= y;
    }
}

/// Reads what `file` has at `at` into `buf` (zeros past its end, as the padding).
fn read_padded(file: &File, path: &Path, size: u64, at: u64, buf: &mut [u8]) -> Result<()> {
    buf.fill(0);
    if at >= size {
        return Ok(());
    }
    let n = ((size - at) as usize).min(buf.len());
    file.read_exact_at(&mut buf[..n], at).map_err(StateError::io("cannot read", path))
}

/// Opens the files of a checkpoint, each with its path and size.
fn open_all<'a>(
    dir: &Path,
    files: impl Iterator<Item = &'a ManifestFile>,
) -> Result<Vec<(File, std::path::PathBuf, u64)>> {
    files
        .map(|f| {
            let path = dir.join(&f.name);
            Ok((File::open(&path).map_err(StateError::io("cannot open", &path))?, path, f.size))
        })
        .collect()
}

/// Writes the XOR of `sources` (open file, its path, its size; each padded with zeros) over
/// `len` bytes into `out`, a block at a time; returns the CRC32C of what was written.
fn xor_files(sources: &[(File, std::path::PathBuf, u64)], len: u64, out: &File, out_path: &Path) -> Result<u32> {
    let (mut acc, mut buf) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    let mut crc = 0u32;
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(BLOCK);
        acc[..n].fill(0);
        for (file, path, size) in sources {
            read_padded(file, path, *size, at, &mut buf[..n])?;
            xor_into(&mut acc[..n], &buf[..n]);
        }
        out.write_all_at(&acc[..n], at).map_err(StateError::io("cannot write", out_path))?;
        crc = crc32c::crc32c_append(crc, &acc[..n]);
        at += n as u64;
    }
    Ok(crc)
}

/// Writes `dir/_parity` for `files` (fsynced); `None` when there are no files.
pub(crate) fn write_parity(dir: &Path, files: &[ManifestFile]) -> Result<Option<ManifestFile>> {
    let len = files.iter().map(|f| f.size).max().unwrap_or(0);
    if files.is_empty() || len == 0 {
        return Ok(None);
    }
    let open = open_all(dir, files.iter())?;
    let out_path = dir.join(PARITY);
    let out = File::create(&out_path).map_err(StateError::io("cannot create", &out_path))?;
    let crc = xor_files(&open, len, &out, &out_path)?;
    out.sync_all().map_err(StateError::io("cannot fsync", &out_path))?;
    Ok(Some(ManifestFile { name: PARITY.to_string(), size: len, crc32c: crc }))
}

/// Rebuilds state file `lost` of the checkpoint in `dir` from its parity and the other files
/// (which the caller verified), replacing the damaged one. `Err` when the result does not match
/// the manifest (the parity or another file is damaged too).
pub(crate) fn rebuild(dir: &Path, files: &[ManifestFile], parity: &ManifestFile, lost: &ManifestFile) -> Result<()> {
    let target = dir.join(&lost.name);
    if lost.size > parity.size {
        return Err(StateError::Damaged {
            path: target,
            reason: "larger than the parity that would rebuild it".into(),
        });
    }
    let sources = open_all(dir, files.iter().filter(|f| f.name != lost.name).chain(std::iter::once(parity)))?;
    let tmp = dir.join(format!("{}.rebuilt", lost.name));
    let out = File::create(&tmp).map_err(StateError::io("cannot create", &tmp))?;
    let crc = xor_files(&sources, lost.size, &out, &tmp)?;
    if crc != lost.crc32c {
        let _ = fs::remove_file(&tmp);
        return Err(StateError::Damaged {
            path: target,
            reason: "the file rebuilt from the parity does not match the manifest (a second file is damaged)".into(),
        });
    }
    out.sync_all().map_err(StateError::io("cannot fsync", &tmp))?;
    if target.exists() {
        let aside = dir.join("_damaged");
        fs::create_dir_all(&aside).map_err(StateError::io("cannot create", &aside))?;
        fs::rename(&target, aside.join(&lost.name)).map_err(StateError::io("cannot move aside", &target))?;
    }
    fs::rename(&tmp, &target).map_err(StateError::io("cannot rename into place", &target))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(StateError::io("cannot fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, name: &str, bytes: &[u8]) -> ManifestFile {
        fs::write(dir.join(name), bytes).unwrap();
        ManifestFile { name: name.into(), size: bytes.len() as u64, crc32c: crc32c::crc32c(bytes) }
    }

    #[test]
    fn any_one_file_lost_or_damaged_is_rebuilt_exactly() {
        let mut rng = keel_types::test_rng::Lcg::seeded("parity");
        let dir = tempfile::tempdir().unwrap();
        // Sizes across the block boundary, an empty-ish one, and unequal lengths.
        let sizes = [BLOCK + 17, 3, 0, 2 * BLOCK - 5, 1000];
        let contents: Vec<Vec<u8>> = sizes.iter().map(|&n| (0..n).map(|_| rng.bits() as u8).collect()).collect();
        let files: Vec<ManifestFile> =
            contents.iter().enumerate().map(|(i, c)| put(dir.path(), &format!("f{i}"), c)).collect();
        let parity = write_parity(dir.path(), &files).unwrap().unwrap();
        assert_eq!(parity.size, (2 * BLOCK - 5) as u64);
        for (i, f) in files.iter().enumerate() {
            // Lost entirely, then damaged in place.
            fs::remove_file(dir.path().join(&f.name)).unwrap();
            rebuild(dir.path(), &files, &parity, f).unwrap();
            assert_eq!(fs::read(dir.path().join(&f.name)).unwrap(), contents[i], "file {i} rebuilt");
            if !contents[i].is_empty() {
                let mut damaged = contents[i].clone();
                let at = rng.below(damaged.len() as u64) as usize;
                damaged[at] ^= 1;
                fs::write(dir.path().join(&f.name), &damaged).unwrap();
                rebuild(dir.path(), &files, &parity, f).unwrap();
                assert_eq!(fs::read(dir.path().join(&f.name)).unwrap(), contents[i]);
                assert_eq!(fs::read(dir.path().join("_damaged").join(&f.name)).unwrap(), damaged, "damage kept");
            }
        }
        // Two damaged files cannot be rebuilt, and nothing is replaced.
        let mut other = contents[0].clone();
        other[0] ^= 1;
        fs::write(dir.path().join("f0"), &other).unwrap();
        fs::write(dir.path().join("f3"), b"gone").unwrap();
        let err = rebuild(dir.path(), &files, &parity, &files[3]).unwrap_err();
        assert!(err.to_string().contains("a second file is damaged"), "{err}");
        assert_eq!(fs::read(dir.path().join("f3")).unwrap(), b"gone");
    }

    #[test]
    fn no_files_no_parity() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_parity(dir.path(), &[]).unwrap().is_none());
    }
}
