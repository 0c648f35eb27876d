//! Blobs on disk: `<data>/blobs/<hex>.data` (the content, `.part` while incomplete) and
//! `<hex>.obao` (the BLAKE3 tree in pre-order, 64 KiB chunk groups), so that any chunk
//! range can be proven on its own. Blocking IO: call from `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::{encode_ranges, encode_ranges_validated, outboard};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

/// 64 KiB chunk groups: the outboard holds one hash pair per group (0.1 % of the data,
/// which is also what proofs add on the wire), and a range can be verified from any
/// group on.
pub const BLOCK: BlockSize = BlockSize::from_chunk_log(6);
/// Bytes in a BLAKE3 chunk.
pub const CHUNK: u64 = 1024;

pub fn hex(hash: &[u8; 32]) -> String {
    data_encoding::HEXLOWER.encode(hash)
}

/// Where one blob's files live.
#[derive(Clone, Debug)]
pub struct Paths {
    pub data: PathBuf,
    pub part: PathBuf,
    pub outboard: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path, hash: &[u8; 32]) -> Paths {
        let h = hex(hash);
        Paths {
            data: dir.join(format!("{h}.data")),
            part: dir.join(format!("{h}.part")),
            outboard: dir.join(format!("{h}.obao")),
        }
    }

    /// Removes every file of the blob; missing files are fine.
    pub fn remove(&self) -> io::Result<()> {
        for p in [&self.data, &self.part, &self.outboard] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether a complete blob's bytes were removed from the blob directory: its `.data` is
/// gone and its `.obao` is not. With both gone, the directory itself may have lost its
/// disk (not mounted yet), which is not taken for a removal: its records and pins stay.
pub fn data_removed(paths: &Paths) -> bool {
    let gone =
        |p: &Path| fs::symlink_metadata(p).is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
    gone(&paths.data) && fs::symlink_metadata(&paths.outboard).is_ok()
}

/// What a file's metadata says of its bytes. Any write to the file changes its ctime,
/// which no user can set back (unlike the mtime); a hard link, rename or `chmod` changes
/// it too, which costs one needless check (except our own, see
/// [`Stamp::unwritten_since`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(m: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// True if the file was not written since `earlier` was taken, as far as its
    /// metadata tells: only its ctime moved (a link, rename or `chmod`), or nothing. A
    /// write that leaves the mtime as it was (set back with `touch`, or within the file
    /// system's timestamp granularity) is not seen; used only across our own link or
    /// rename of a file we hold a verified stamp of, a few microseconds.
    pub fn unwritten_since(&self, earlier: &Stamp) -> bool {
        (self.dev, self.ino, self.size, self.mtime)
            == (earlier.dev, earlier.ino, earlier.size, earlier.mtime)
    }
}

pub fn stamp(path: &Path) -> io::Result<Stamp> {
    Ok(Stamp::of(&fs::metadata(path)?))
}

/// Makes a complete blob's data file read-only (its write bits cleared; who may read it
/// is left as it was): the output of `blob get -o` on the store's file system is a hard
/// link to it, and a user's in-place write to that output (`cp`, `>`) then fails rather
/// than damage the store's copy. Changes the ctime: call before taking the file's
/// [`Stamp`]. Best effort.
pub fn seal(file: &File) {
    use std::os::unix::fs::PermissionsExt;
    let sealed = file.metadata().and_then(|m| {
        let mode = m.permissions().mode() & 0o7777;
        if mode & 0o222 == 0 {
            return Ok(());
        }
        file.set_permissions(fs::Permissions::from_mode(mode & !0o222))
    });
    // A file system without modes (FAT) or a file of another owner: the store's copy is
    // then as writable as it was, and a write to it is still caught by its stamp.
    if let Err(e) = sealed {
        tracing::debug!("cannot make a stored blob read-only: {e}");
    }
}

/// Copies what `read` yields into `to`, passing it on; remembers whether a failure was
/// the reader's.
pub(super) struct Tee<R, W> {
    read: R,
    to: W,
    read_failed: bool,
}

impl<R, W> Tee<R, W> {
    pub(super) fn new(read: R, to: W) -> Self {
        Tee {
            read,
            to,
            read_failed: false,
        }
    }

    /// Whether a failure was the reader's.
    pub(super) fn read_failed(&self) -> bool {
        self.read_failed
    }
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .read
            .read(buf)
            .inspect_err(|_| self.read_failed = true)?;
        self.to.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Steps of a blob's way to disk at which tests make the file system fail (the seam of
/// `fault_tests`); in a build that is not a test, passing one costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Create,
    Write,
    SyncData,
    SyncTree,
    RenameTree,
    RenameData,
    SyncDir,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Create,
        Step::Write,
        Step::SyncData,
        Step::SyncTree,
        Step::RenameTree,
        Step::RenameData,
        Step::SyncDir,
    ];
}

#[cfg(not(test))]
fn step(_dir: &Path, _at: Step) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
fn step(dir: &Path, at: Step) -> io::Result<()> {
    super::faults::hit(dir, at)
}

/// Why a `blob add` failed: reading the source, or writing the store.
#[derive(Debug)]
pub enum ImportError {
    Source(io::Error),
    Store(io::Error),
}

impl From<io::Error> for ImportError {
    fn from(e: io::Error) -> Self {
        ImportError::Store(e)
    }
}

/// Files in the blob directory that no record explains.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// To remove: `import-*` of a `blob add` that did not finish, `.part` of a blob not
    /// recorded or recorded complete, `.obao` with neither, `.obao-new` of an adoption
    /// that did not finish.
    pub doomed: Vec<PathBuf>,
    /// Whole blobs (`<hash>.data`) that no record names: an add that crashed before its
    /// record, or a store moved aside. They are checked and recorded again, never removed
    /// unchecked: they may be the only copy.
    pub unrecorded: Vec<[u8; 32]>,
}

/// Sorts the blob directory's files against the records (`known`: hash → complete).
/// Names it did not make are left alone.
pub fn leftovers(
    dir: &Path,
    known: &std::collections::HashMap<[u8; 32], bool>,
) -> io::Result<Leftovers> {
    let mut out = Leftovers::default();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if !matches!(ext, "data" | "part" | "obao" | "obao-new") {
            continue;
        }
        if stem.starts_with("import-") {
            out.doomed.push(path);
            continue;
        }
        let Some(hash) = data_encoding::HEXLOWER
            .decode(stem.as_bytes())
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
        else {
            continue;
        };
        match (known.get(&hash), ext) {
            // A tree that adopt did not finish: computed again if the blob is adopted.
            (_, "obao-new") => out.doomed.push(path),
            (Some(true), "part") => out.doomed.push(path),
            (Some(_), _) => {}
            (None, "data") => out.unrecorded.push(hash),
            (None, "part") => out.doomed.push(path),
            (None, _) if !Paths::new(dir, &hash).data.exists() => out.doomed.push(path),
            (None, _) => {}
        }
    }
    out.unrecorded.sort_unstable();
    Ok(out)
}

/// Checks a `<hash>.data` no record names: if its bytes hash to its name, its tree is
/// computed again (`.obao`) and its size returned, with its stamp before it was read (the
/// file [sealed](seal) first); if not, it is removed.
pub fn adopt(dir: &Path, hash: &[u8; 32]) -> io::Result<Option<(u64, Stamp)>> {
    let paths = Paths::new(dir, hash);
    let data = File::open(&paths.data)?;
    seal(&data);
    let meta = data.metadata()?;
    let (size, stamp) = (meta.len(), Stamp::of(&meta));
    let tmp = paths.outboard.with_extension("obao-new");
    let tree = BaoTree::new(size, BLOCK);
    let mut ob = PreOrderOutboard {
        root: blake3::Hash::from([0; 32]),
        tree,
        data: File::create(&tmp)?,
    };
    let root = outboard(io::BufReader::with_capacity(1 << 20, data), tree, &mut ob);
    let good = root.as_ref().is_ok_and(|r| r.as_bytes() == hash);
    if !good {
        let _ = fs::remove_file(&tmp);
        root?;
        fs::remove_file(&paths.data)?;
        return Ok(None);
    }
    let kept = ob
        .data
        .sync_all()
        .and_then(|()| fs::rename(&tmp, &paths.outboard));
    if let Err(e) = kept {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()?;
    Ok(Some((size, stamp)))
}

/// Runs what a test planned for the moment `from`'s bytes were read
/// ([`super::faults::WHILE_READ`]); nothing outside tests.
pub(super) fn while_read(_from: &Path) {
    #[cfg(test)]
    super::faults::while_read(_from);
}

/// BLAKE3 of a stored blob's bytes, read in one streaming pass, and the file's stamp
/// taken before they were read if it was the same after (none if the file was written
/// to, or its mode changed, while it was read).
pub fn hash_stamped(path: &Path) -> io::Result<([u8; 32], Option<Stamp>)> {
    let file = File::open(path)?;
    let (hash, before) = hash_open(file.try_clone()?)?;
    while_read(path);
    let after = Stamp::of(&file.metadata()?);
    Ok((hash, (after == before).then_some(before)))
}

/// BLAKE3 of a file already open, read in one streaming pass, and its stamp taken
/// before it was read (compare it with one taken after: [`hash_stamped`]).
pub fn hash_open(file: File) -> io::Result<([u8; 32], Stamp)> {
    let stamp = Stamp::of(&file.metadata()?);
    let mut h = blake3::Hasher::new();
    h.update_reader(io::BufReader::with_capacity(1 << 20, file))?;
    Ok((*h.finalize().as_bytes(), stamp))
}

/// Copies `source` into the store in one streaming pass (constant memory), computing its
/// BLAKE3 tree on the way; returns (hash, size, the [sealed](seal) data file's stamp
/// before it was renamed into place).
pub fn import(dir: &Path, source: &Path) -> Result<([u8; 32], u64, Stamp), ImportError> {
    let src = File::open(source).map_err(ImportError::Source)?;
    let size = src.metadata().map_err(ImportError::Source)?.len();
    let tag = format!("import-{}-{}", std::process::id(), rand::random::<u64>());
    let (tmp_data, tmp_obao) = (
        dir.join(format!("{tag}.data")),
        dir.join(format!("{tag}.obao")),
    );
    // Set once the files are renamed into place, if no copy of the blob was there before:
    // a failure after that removes them too, so a failed add leaves nothing behind.
    let mut placed: Option<Paths> = None;
    let result = (|| {
        step(dir, Step::Create)?;
        let data = io::BufWriter::with_capacity(1 << 20, File::create(&tmp_data)?);
        let tree = BaoTree::new(size, BLOCK);
        let mut ob = PreOrderOutboard {
            root: blake3::Hash::from([0; 32]),
            tree,
            data: File::create(&tmp_obao)?,
        };
        let mut tee = Tee::new(io::BufReader::with_capacity(1 << 20, src), data);
        let root = outboard(&mut tee, tree, &mut ob).map_err(|e| match tee.read_failed {
            true => ImportError::Source(e),
            false => ImportError::Store(e),
        })?;
        // A file that changed size while we read it is refused rather than stored wrong.
        let mut rest = [0u8; 1];
        if tee.read.read(&mut rest).map_err(ImportError::Source)? != 0 {
            let grew = io::Error::other("the file grew while it was being added");
            return Err(ImportError::Source(grew));
        }
        let data = tee.to.into_inner().map_err(|e| e.into_error())?;
        step(dir, Step::Write)?;
        seal(&data);
        step(dir, Step::SyncData)?;
        data.sync_all()?;
        let stamp = Stamp::of(&data.metadata()?);
        step(dir, Step::SyncTree)?;
        ob.data.sync_all()?;
        let hash = *root.as_bytes();
        let paths = Paths::new(dir, &hash);
        if !paths.data.exists() {
            placed = Some(paths.clone());
        }
        step(dir, Step::RenameTree)?;
        fs::rename(&tmp_obao, &paths.outboard)?;
        step(dir, Step::RenameData)?;
        fs::rename(&tmp_data, &paths.data)?;
        step(dir, Step::SyncDir)?;
        File::open(dir)?.sync_all()?;
        Ok((hash, size, stamp))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_data);
        let _ = fs::remove_file(&tmp_obao);
        if let Some(paths) = placed {
            let _ = paths.remove();
        }
    }
    result
}

/// Chunk ranges as bao-tree's range set.
pub fn range_set(ranges: &[(u64, u64)]) -> ChunkRanges {
    let mut set = ChunkRanges::empty();
    for (s, e) in ranges {
        set |= ChunkRanges::from(ChunkNum(*s)..ChunkNum(*e));
    }
    set
}

/// Encodes `ranges` of a blob with their proof. A complete blob was verified when it was
/// stored, and every receiver verifies again, so it is read as is; a partial one (`.part`)
/// is checked range by range, failing on any part not yet held.
pub fn encode(
    paths: &Paths,
    hash: &[u8; 32],
    size: u64,
    ranges: &[(u64, u64)],
) -> io::Result<super::wire::Framed> {
    let ob = PreOrderOutboard {
        root: blake3::Hash::from(*hash),
        tree: BaoTree::new(size, BLOCK),
        data: File::open(&paths.outboard)?,
    };
    let r = range_set(ranges);
    // At most what the ranges hold of the blob, and their proof.
    let chunks: u64 = ranges
        .iter()
        .map(|(s, e)| e.min(&size.div_ceil(CHUNK)).saturating_sub(*s))
        .sum();
    let chunks = chunks.min(super::wire::MAX_REQUEST_CHUNKS);
    let mut framed = super::wire::Framed::with_capacity(super::wire::encoded_bound(chunks));
    let out = framed.buffer();
    match File::open(&paths.data) {
        Ok(data) => match super::in_place::encode(&data, &ob, &r, out) {
            Some(done) => done?,
            None => encode_ranges(&data, &ob, &r, out).map_err(io::Error::other)?,
        },
        Err(_) => encode_ranges_validated(&File::open(&paths.part)?, &ob, &r, out)
            .map_err(io::Error::other)?,
    }
    Ok(framed)
}

/// Opens (creating if needed) the files a fetch writes into.
pub fn open_partial(paths: &Paths, size: u64) -> io::Result<(File, File)> {
    let open = |p: &Path| {
        File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(p)
    };
    let data = open(&paths.part)?;
    data.set_len(size)?;
    let ob = open(&paths.outboard)?;
    ob.set_len(BaoTree::new(size, BLOCK).outboard_size())?;
    Ok((data, ob))
}

/// Why a response was not stored.
#[derive(Debug)]
pub enum DecodeFailure {
    /// The bytes are wrong or missing: the provider's doing.
    Bad(String),
    /// They verified, but writing them here failed (a full or failing disk): nobody's
    /// fault but this node's, and no reason to drop the provider.
    Local(io::Error),
}

/// Verifies an encoded response for `ranges` and writes what verifies. Data is written
/// only after its chunk group has been checked against the tree; an error stops at the
/// first bad group, having written only good ones.
pub fn decode(
    encoded: &[u8],
    hash: &[u8; 32],
    size: u64,
    ranges: &[(u64, u64)],
    data: impl bao_tree::io::sync::WriteAt,
    ob: File,
) -> Result<(), DecodeFailure> {
    let ob = PreOrderOutboard {
        root: blake3::Hash::from(*hash),
        tree: BaoTree::new(size, BLOCK),
        data: ob,
    };
    super::in_place::decode(encoded, &range_set(ranges), data, ob)
}

/// Makes a finished fetch the blob: data durable, `.part` renamed to `.data` and
/// [sealed](seal) (after the rename: a `.part` left read-only by a crash could not be
/// written again by a resumed fetch). Returns the data file's stamp then, as verified.
pub fn finish(paths: &Paths, data: File, ob: File) -> io::Result<Stamp> {
    data.sync_all()?;
    ob.sync_all()?;
    fs::rename(&paths.part, &paths.data)?;
    seal(&data);
    let stamp = Stamp::of(&data.metadata()?);
    if let Some(dir) = paths.data.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_sorts_the_files_no_record_explains() {
        let dir = tempfile::tempdir().unwrap();
        let (complete, partial, unknown, stray) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
        let known = [(complete, true), (partial, false)].into_iter().collect();
        let name = |h: &[u8; 32], ext: &str| format!("{}.{ext}", hex(h));
        let kept = [
            name(&complete, "data"),
            name(&complete, "obao"),
            name(&partial, "part"),
            name(&partial, "obao"),
            name(&unknown, "data"),
            name(&unknown, "obao"),
            "notes.txt".to_string(),
            "abc.data".to_string(),
        ];
        let doomed = [
            "import-17-99.data".to_string(),
            "import-17-99.obao".to_string(),
            name(&complete, "part"),
            name(&stray, "part"),
            name(&stray, "obao"),
            name(&unknown, "obao-new"),
        ];
        for f in kept.iter().chain(&doomed) {
            fs::write(dir.path().join(f), b"x").unwrap();
        }
        let found = leftovers(dir.path(), &known).unwrap();
        let mut names: Vec<String> = found
            .doomed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = doomed.to_vec();
        want.sort();
        assert_eq!(names, want);
        assert_eq!(found.unrecorded, vec![unknown]);
    }

    #[test]
    fn an_unrecorded_blob_is_adopted_if_it_is_the_blob_and_removed_if_not() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let hash = *blake3::hash(&bytes).as_bytes();
        let paths = Paths::new(dir.path(), &hash);
        fs::write(&paths.data, &bytes).unwrap();
        let (size, stamp) = adopt(dir.path(), &hash).unwrap().unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(stamp, super::stamp(&paths.data).unwrap());
        let mode = fs::metadata(&paths.data).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o222, 0);
        assert!(paths.outboard.exists());
        // Damaged: removed.
        let mut bad = bytes.clone();
        bad[7] ^= 1;
        fs::remove_file(&paths.data).unwrap();
        fs::write(&paths.data, &bad).unwrap();
        assert_eq!(adopt(dir.path(), &hash).unwrap(), None);
        assert!(!paths.data.exists());
    }
}
