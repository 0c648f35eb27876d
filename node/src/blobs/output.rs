//! Where `blob get -o FILE` writes: a temporary file beside `FILE`, renamed into place once
//! whole, so a failed fetch or copy never leaves half a file there, and never a file
//! inside the daemon's data directory.
//!
//! On the store's file system the output is a hard link to the store's data file: no
//! byte is written twice. The two names share their bytes and their mode, read-only
//! ([`super::files::seal`]), so a user's in-place write to the output fails; one that
//! happens anyway (root) is a write to the store's copy, which the store notices
//! ([`super::files::Stamp`]) and hashes the blob again before serving it. Elsewhere a
//! fresh fetch streams each verified chunk group into the output as it lands in the
//! store, and a blob already held is copied out. A stored copy written to while it is
//! linked or copied out is not placed ([`Verdict::Changed`]). Blocking IO: call from
//! `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bao_tree::io::sync::WriteAt;
use tracing::debug;

use super::files::{self, Stamp, Tee};

/// Temporary output files being written now, by their path through their directory's
/// canonical path, which [`remove_strays`] leaves alone (two fetches may write to the
/// same output, named in two ways).
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live(tmp: &Path, add: bool) {
    let mut live = crate::lock(&LIVE);
    if add {
        live.push(tmp.to_path_buf());
    } else {
        live.retain(|p| p != tmp);
    }
}

/// What the stored copy proved to be while it was linked or copied out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The blob's bytes: hashed, or as marked intact and not written since.
    Good,
    /// Not the blob's bytes, though nothing wrote to the copy while it was read: the
    /// stored copy is damaged.
    Corrupt,
    /// Written to while it was linked, copied or hashed: what the output holds need not
    /// be what was checked, and nothing is placed. Not a sign of damage: try again.
    Changed,
}

/// An error reading the stored copy `from`, said so.
fn reading(from: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| {
        io::Error::new(
            e.kind(),
            format!("reading the stored copy {}: {e}", from.display()),
        )
    }
}

/// The stamp of the stored copy `from`, opened as `src`.
fn stamp(src: &File, from: &Path) -> io::Result<Stamp> {
    src.metadata().map(|m| Stamp::of(&m)).map_err(reading(from))
}

/// Whether the bytes hashed to the blob (or were taken on trust), and whether the
/// stored copy stayed as it was while they were read.
fn judge(matches: bool, steady: bool) -> Verdict {
    match (steady, matches) {
        (false, _) => Verdict::Changed,
        (true, true) => Verdict::Good,
        (true, false) => Verdict::Corrupt,
    }
}

/// What [`Output::fill`] and [`copy_out`] found of the stored copy.
#[derive(Debug)]
pub struct Filled {
    pub verdict: Verdict,
    /// Whether the bytes were hashed.
    pub hashed: bool,
    /// The stored copy's stamp when opened, before anything was linked or read.
    pub opened: Stamp,
    /// Its stamp as verified (once linked, or as opened if copied), if nothing moved it
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
    /// `tmp` through its directory's canonical path: its name in [`LIVE`].
    live: PathBuf,
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
        let tmp_name = format!(
            ".{}.lattice-{:016x}",
            name.to_string_lossy(),
            rand::random::<u64>()
        );
        let tmp = to.with_file_name(&tmp_name);
        let live_as = fs::canonicalize(to.parent().unwrap_or(Path::new("/")))?.join(&tmp_name);
        // Registered first: a sweep beside it never sees it unregistered.
        live(&live_as, true);
        let file = match File::options().write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            Err(e) => {
                live(&live_as, false);
                return Err(e);
            }
        };
        Ok(Output {
            tmp,
            live: live_as,
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
    /// file system allows ([`Output::linked`]), a copy elsewhere ([`Output::copied`]).
    /// The bytes are hashed unless the stored copy is, when opened, exactly as it was
    /// `marked` intact. A copy written to meanwhile is [`Verdict::Changed`], never
    /// [`Verdict::Good`].
    pub fn fill(
        &mut self,
        from: &Path,
        hash: &[u8; 32],
        marked: Option<Stamp>,
    ) -> io::Result<Filled> {
        let src = File::open(from).map_err(reading(from))?;
        if self.beside(from)? {
            // Data files of stores older than sealing are sealed now: an in-place write
            // to the output then fails rather than damage the store's copy.
            files::seal(&src);
            let opened = stamp(&src, from)?;
            fs::remove_file(&self.tmp)?;
            match fs::hard_link(from, &self.tmp) {
                Ok(()) => return self.linked(from, src, opened, hash, marked),
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
        self.copied(from, src, hash, marked)
    }

    /// The temporary file just linked to `from`, opened before as `src` (stamped
    /// `opened`): hashed through `src` unless it was as `marked` when opened, so what is
    /// hashed is the store's copy, whatever happens beside the output.
    fn linked(
        &self,
        from: &Path,
        src: File,
        opened: Stamp,
        hash: &[u8; 32],
        marked: Option<Stamp>,
    ) -> io::Result<Filled> {
        let linked = stamp(&src, from)?;
        let tmp = fs::symlink_metadata(&self.tmp)?;
        if (linked.dev, linked.ino) != (tmp.dev(), tmp.ino()) {
            return Err(io::Error::other(
                "the stored copy was replaced while it was linked (a `blob add` of the same bytes?); try again",
            ));
        }
        // Not as marked (or never marked): a write, or a file renamed over it, since.
        let hashing = marked != Some(opened);
        let (verdict, unchanged) = if hashing {
            let (got, _) = files::hash_open(src.try_clone()?).map_err(reading(from))?;
            files::while_read(from);
            // Written while hashed: the bytes placed need not be those hashed. Any write
            // moves the ctime, which no one can set back.
            let steady = stamp(&src, from)? == linked;
            (judge(got == *hash, steady), steady.then_some(linked))
        } else {
            // As marked when opened; moved by nothing but our link (a few microseconds)?
            files::while_read(from);
            let by_link = linked.unwritten_since(&opened) && stamp(&src, from)? == linked;
            (judge(true, by_link), by_link.then_some(linked))
        };
        Ok(Filled {
            verdict,
            hashed: hashing,
            opened,
            unchanged,
            placed: None,
            src,
        })
    }

    /// Copies `from`, opened as `src`, into the temporary file: hashed on the way unless
    /// it was as `marked` when opened.
    pub(super) fn copied(
        &self,
        from: &Path,
        src: File,
        hash: &[u8; 32],
        marked: Option<Stamp>,
    ) -> io::Result<Filled> {
        let opened = stamp(&src, from)?;
        let hashing = marked != Some(opened);
        let mut file = &self.file;
        let matches = if hashing {
            let mut h = blake3::Hasher::new();
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut file);
            let mut tee = Tee::new(io::BufReader::with_capacity(1 << 20, &src), &mut out);
            h.update_reader(&mut tee)
                .map_err(|e| match tee.read_failed() {
                    true => reading(from)(e),
                    false => e,
                })?;
            drop(tee);
            out.flush()?;
            h.finalize().as_bytes() == hash
        } else {
            // File to file: the kernel copies (copy_file_range), sharing the blocks where
            // the file system can (reflinks on XFS and Btrfs). Taken on trust as marked,
            // unless the stamp moves while copying.
            io::copy(&mut &src, &mut file)?;
            true
        };
        files::while_read(from);
        let steady = stamp(&src, from)? == opened;
        Ok(Filled {
            verdict: judge(matches, steady),
            hashed: hashing,
            opened,
            unchanged: steady.then_some(opened),
            placed: None,
            src,
        })
    }

    /// Another handle on the temporary file, for a piece's writes.
    pub fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Renames the whole file into place.
    pub fn place(self) -> io::Result<PathBuf> {
        self.place_then(|| ()).map(|(to, ())| to)
    }

    /// Renames the whole file into place and runs `then` right after (once the temporary
    /// name is gone), before the directory is swept.
    pub fn place_then<T>(mut self, then: impl FnOnce() -> T) -> io::Result<(PathBuf, T)> {
        // Checked again just before the rename: the fetch may have taken minutes, time
        // enough for a directory on the way to be swapped for a symlink.
        check_output(&self.to, &self.data_dir)?;
        fs::rename(&self.tmp, &self.to)?;
        self.placed = true;
        // rename(2) does nothing when both names link the same file already (the output
        // of an earlier `-o`, linked to the same stored copy). Its unlink moves the
        // file's ctime: done before `then`, which may stamp it.
        if fs::symlink_metadata(&self.tmp).is_ok() {
            let _ = fs::remove_file(&self.tmp);
        }
        let then = then();
        remove_strays(&self.to);
        Ok((self.to.clone(), then))
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
    // Read through its canonical path, so that entries are named as in LIVE.
    let Ok(entries) = fs::canonicalize(dir).and_then(fs::read_dir) else {
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
        live(&self.live, false);
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
/// [`Output`], hashing it unless it is as `marked` intact; places it only if it proved
/// [`Verdict::Good`].
pub fn copy_out(
    from: &Path,
    to: &Path,
    hash: &[u8; 32],
    marked: Option<Stamp>,
    data_dir: &Path,
) -> io::Result<Filled> {
    let mut output = Output::create(to, data_dir)?;
    let mut filled = output.fill(from, hash, marked)?;
    if filled.verdict == Verdict::Good {
        let (src, unchanged) = (&filled.src, filled.unchanged);
        // Stamped right after the rename: the less time between, the less a write with
        // its mtime set back could hide in it.
        let (_, placed) = output.place_then(|| {
            let now = Stamp::of(&src.metadata().ok()?);
            unchanged.filter(|u| now.unwritten_since(u)).map(|_| now)
        })?;
        filled.placed = placed;
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
