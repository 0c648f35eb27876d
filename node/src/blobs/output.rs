//! Where `blob get -o FILE` writes: a temporary file beside `FILE`, renamed into place once
//! whole, so a failed fetch or copy never leaves half a file there, and never a file
//! inside the daemon's data directory.
//!
//! On the store's file system the output is a hard link to the store's data file: no
//! byte is written twice. The two names share their bytes and their mode, read-only
//! ([`super::files::seal`]), so a user's in-place write to the output fails; one that
//! happens anyway (root) is a write to the store's copy, which the store notices
//! ([`super::files::Stamp`]) and hashes the blob again before serving it. Elsewhere a fresh fetch streams each verified chunk
//! group into the output as it lands in the store, and a blob already held is copied
//! out. Blocking IO: call from `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bao_tree::io::sync::WriteAt;
use tracing::debug;

use super::files::{self, Stamp, Tee};

/// Temporary output files being written now, which [`remove_strays`] leaves alone (two
/// fetches may write to the same output).
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live(tmp: &Path, add: bool) {
    let mut live = crate::lock(&LIVE);
    if add {
        live.push(tmp.to_path_buf());
    } else {
        live.retain(|p| p != tmp);
    }
}

/// What [`Output::fill`] and [`copy_out`] found of the stored copy.
#[derive(Debug)]
pub struct Filled {
    /// The bytes are the blob's (taken on trust when not hashed).
    pub good: bool,
    /// Whether they were hashed.
    pub hashed: bool,
    /// The stored copy's stamp when opened, before anything was linked or read.
    pub opened: Stamp,
    /// Its stamp once linked (or as opened, if copied), if nothing but our link moved it
    /// from then until the fill ended.
    unchanged: Option<Stamp>,
    /// Its stamp once the output is placed, if it was unchanged and nothing but our
    /// rename moved it since ([`copy_out`]).
    pub placed: Option<Stamp>,
    src: File,
}

/// A temporary output file, removed when dropped unless it was placed.
#[derive(Debug)]
pub struct Output {
    tmp: PathBuf,
    to: PathBuf,
    data_dir: PathBuf,
    file: File,
    placed: bool,
}

impl Output {
    /// Creates the temporary file beside `to`, after checking that `to` is outside
    /// `data_dir`.
    pub fn create(to: &Path, data_dir: &Path) -> io::Result<Output> {
        check_output(to, data_dir)?;
        let name = to.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the output names no file")
        })?;
        let tmp = to.with_file_name(format!(
            ".{}.lattice-{:016x}",
            name.to_string_lossy(),
            rand::random::<u64>()
        ));
        let file = File::options().write(true).create_new(true).open(&tmp)?;
        live(&tmp, true);
        Ok(Output {
            tmp,
            to: to.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            file,
            placed: false,
        })
    }

    /// True if `path` is on the output's file system, where it can be linked.
    pub fn beside(&self, path: &Path) -> io::Result<bool> {
        Ok(self.file.metadata()?.dev() == fs::metadata(path)?.dev())
    }

    /// Fills the temporary file with the stored blob `from`: a hard link to it where the
    /// file system allows, a copy elsewhere. With `hash`, the bytes are hashed: through
    /// the stored copy opened before it is linked (so what is hashed is the store's,
    /// whatever happens beside the output), or on their way into the copy.
    pub fn fill(&mut self, from: &Path, hash: Option<&[u8; 32]>) -> io::Result<Filled> {
        let reading = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("reading the stored copy {}: {e}", from.display()),
            )
        };
        let src = File::open(from).map_err(reading)?;
        let stamp = |f: &File| f.metadata().map(|m| Stamp::of(&m)).map_err(reading);
        if self.beside(from)? {
            // Data files of stores older than sealing are sealed now: an in-place write
            // to the output then fails rather than damage the store's copy.
            files::seal(&src);
            let opened = stamp(&src)?;
            fs::remove_file(&self.tmp)?;
            match fs::hard_link(from, &self.tmp) {
                Ok(()) => {
                    let linked = stamp(&src)?;
                    let tmp = fs::symlink_metadata(&self.tmp)?;
                    if (linked.dev, linked.ino) != (tmp.dev(), tmp.ino()) {
                        return Err(io::Error::other(
                            "the stored copy was replaced while it was linked (a `blob add` of the same bytes?); try again",
                        ));
                    }
                    // Moved by nothing but our link (a few microseconds), and then by
                    // nothing at all while hashed.
                    let mut unchanged = linked.unwritten_since(&opened).then_some(linked);
                    let mut good = true;
                    if let Some(want) = hash {
                        let (got, _) = files::hash_open(src.try_clone()?).map_err(reading)?;
                        let after = stamp(&src)?;
                        // Written while hashed: the bytes placed need not be those hashed.
                        good = got == *want && after.unwritten_since(&linked);
                        unchanged = unchanged.filter(|u| *u == after);
                    }
                    return Ok(Filled {
                        good,
                        hashed: hash.is_some(),
                        opened,
                        unchanged,
                        placed: None,
                        src,
                    });
                }
                // A bind mount (same device, other mount), or a file system without hard
                // links: copied.
                Err(e) => {
                    debug!(output = %self.to.display(), "cannot link the output to the store, copying: {e}");
                    self.file = File::options()
                        .write(true)
                        .create_new(true)
                        .open(&self.tmp)?;
                }
            }
        }
        let opened = stamp(&src)?;
        let mut file = &self.file;
        let good = match hash {
            Some(want) => {
                let mut h = blake3::Hasher::new();
                let mut out = io::BufWriter::with_capacity(1 << 20, &mut file);
                let mut tee = Tee::new(io::BufReader::with_capacity(1 << 20, &src), &mut out);
                h.update_reader(&mut tee)
                    .map_err(|e| match tee.read_failed() {
                        true => reading(e),
                        false => e,
                    })?;
                drop(tee);
                out.flush()?;
                h.finalize().as_bytes() == want
            }
            // File to file: the kernel copies (copy_file_range), sharing the blocks where
            // the file system can (reflinks on XFS and Btrfs).
            None => {
                io::copy(&mut &src, &mut file)?;
                true
            }
        };
        let after = stamp(&src)?;
        Ok(Filled {
            good,
            hashed: hash.is_some(),
            opened,
            unchanged: (after == opened).then_some(opened),
            placed: None,
            src,
        })
    }

    /// Another handle on the temporary file, for a piece's writes.
    pub fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Renames the whole file into place.
    pub fn place(mut self) -> io::Result<PathBuf> {
        // Checked again just before the rename: the fetch may have taken minutes, time
        // enough for a directory on the way to be swapped for a symlink.
        check_output(&self.to, &self.data_dir)?;
        fs::rename(&self.tmp, &self.to)?;
        self.placed = true;
        // rename(2) does nothing when both names link the same file already (the output
        // of an earlier `-o`, linked to the same stored copy).
        if fs::symlink_metadata(&self.tmp).is_ok() {
            let _ = fs::remove_file(&self.tmp);
        }
        remove_strays(&self.to);
        Ok(self.to.clone())
    }
}

/// Removes what fetches into `to` that were killed midway left beside it: regular files
/// named as [`Output::create`] names its temporary files (a daemon killed with `kill -9`
/// cannot clean up after itself). Best effort.
fn remove_strays(to: &Path) {
    let (Some(dir), Some(name)) = (to.parent(), to.file_name()) else {
        return;
    };
    let prefix = format!(".{}.lattice-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let ours = file
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        // Never through a symlink: only a file of our own making goes, and never one
        // that a fetch running now is writing.
        let path = e.path();
        let busy = crate::lock(&LIVE).contains(&path);
        if ours && !busy && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(path);
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.tmp);
        }
        live(&self.tmp, false);
    }
}

/// Where a fetch's verified chunk groups go: the store's partial file, and the output
/// file of a `-o` fetch at the same offsets.
pub struct Targets {
    pub store: File,
    pub out: Option<File>,
}

impl WriteAt for Targets {
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<usize> {
        self.store.write_all_at(buf, pos)?;
        if let Some(out) = &self.out {
            // Said so: a full disk there is not the store's.
            out.write_all_at(buf, pos)
                .map_err(|e| io::Error::new(e.kind(), format!("writing the output file: {e}")))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies (or links, see [`Output::fill`]) a stored blob to `to` through a temporary
/// [`Output`]. With `hash`, the bytes are hashed, and nothing is placed if they are not
/// the blob.
pub fn copy_out(
    from: &Path,
    to: &Path,
    hash: Option<&[u8; 32]>,
    data_dir: &Path,
) -> io::Result<Filled> {
    let mut output = Output::create(to, data_dir)?;
    let mut filled = output.fill(from, hash)?;
    if filled.good {
        output.place()?;
        filled.placed = filled.unchanged.and_then(|u| {
            let now = Stamp::of(&filled.src.metadata().ok()?);
            now.unwritten_since(&u).then_some(now)
        });
    }
    Ok(filled)
}

/// Refuses an output path that resolves (through `..` and symlinks) into `data_dir`: a
/// copy there could overwrite the node's own database or blobs.
pub fn check_output(to: &Path, data_dir: &Path) -> io::Result<()> {
    let parent = to.parent().unwrap_or(Path::new("/"));
    let parent = fs::canonicalize(parent)?;
    let data = fs::canonicalize(data_dir)?;
    // The blob directory too, in case it is a symlink to another disk.
    let blobs = fs::canonicalize(data_dir.join("blobs")).unwrap_or_else(|_| data.clone());
    if parent.starts_with(&data) || parent.starts_with(&blobs) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to write inside the daemon's data directory {}",
                data.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_output_is_whole_or_absent_and_placing_it_sweeps_only_dead_temporaries() {
        let data = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("out.bin");
        // Dropped before it is placed: nothing is left.
        let first = Output::create(&to, data.path()).unwrap();
        first.file().unwrap().write_all_at(b"half", 0).unwrap();
        drop(first);
        assert!(names(dir.path()).is_empty());

        // What killed fetches left, a symlink and a user's file of a similar name.
        let dead = dir.path().join(".out.bin.lattice-0123456789abcdef");
        fs::write(&dead, b"stale").unwrap();
        let link = dir.path().join(".out.bin.lattice-fedcba9876543210");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        let mine = dir.path().join(".out.bin.lattice-notes");
        fs::write(&mine, b"mine").unwrap();
        // A fetch into the same output still running.
        let running = Output::create(&to, data.path()).unwrap();
        let done = Output::create(&to, data.path()).unwrap();
        done.file().unwrap().write_all_at(b"whole", 0).unwrap();
        assert_eq!(done.place().unwrap(), to);
        assert_eq!(fs::read(&to).unwrap(), b"whole");
        assert!(!dead.exists(), "a dead temporary stayed");
        assert!(fs::symlink_metadata(&link).is_ok(), "a symlink went");
        assert!(mine.exists(), "a file not of our naming went");
        assert!(running.tmp.exists(), "a running fetch's file went");
        drop(running);
        assert_eq!(
            names(dir.path()),
            vec![
                ".out.bin.lattice-fedcba9876543210".to_string(),
                ".out.bin.lattice-notes".to_string(),
                "out.bin".to_string()
            ]
        );
    }

    #[test]
    fn an_output_inside_the_data_directory_is_refused_before_anything_is_written() {
        let data = tempfile::tempdir().unwrap();
        fs::create_dir(data.path().join("blobs")).unwrap();
        let inside = data.path().join("blobs").join("x");
        let err = Output::create(&inside, data.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(names(&data.path().join("blobs")), Vec::<String>::new());
    }
}
