//! The mark a complete blob carries once its bytes were hashed ([`Blobs::check_intact`]):
//! kept across nothing but our own link or rename, lost at a write, and a data file that
//! cannot be read is refused and kept rather than removed as corrupt.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::fault_tests::overlay;
use super::files::{self, Paths};
use super::output::{self, Output, Verdict};
use super::*;
use crate::store::StoreThread;

/// A blob store with one 300 KB blob added; its data file.
async fn one_blob(tmp: &Path) -> (Blobs, StoreThread, [u8; 32], PathBuf) {
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (store, thread) = Store::open(&data.join("lattice.redb")).unwrap();
    let blobs = Blobs::open(&data, store, overlay().await, None)
        .await
        .unwrap();
    let src = tmp.join("src.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let hash = blobs.add(src).await.unwrap().hash;
    let file = Paths::new(&data.join("blobs"), &hash).data;
    (blobs, thread, hash, file)
}

#[tokio::test]
async fn a_stored_copy_is_read_only_and_its_mark_survives_a_link_but_not_a_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (blobs, _thread, hash, file) = one_blob(tmp.path()).await;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o222, 0, "a user's in-place write would reach it");
    let verified = blobs
        .intact_stamp(&hash)
        .await
        .expect("hashed on its way in");

    // Our own link and rename (as `blob get -o` makes): still intact.
    let out = tmp.path().join("out");
    std::fs::hard_link(&file, tmp.path().join("tmp")).unwrap();
    std::fs::rename(tmp.path().join("tmp"), &out).unwrap();
    blobs.mark_intact_since(hash, verified).await;
    assert!(blobs.is_intact(&hash).await);

    // A write between the stamp and the mark (by a user who made the file writable
    // again, or root) is not taken in by it. It also grows the file: seen whatever the
    // file system's timestamp granularity.
    let verified = blobs.intact_stamp(&hash).await.unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut &f, b"\xff").unwrap();
    blobs.mark_intact_since(hash, verified).await;
    assert!(!blobs.is_intact(&hash).await);
    // So the next serve hashes it and finds it corrupt.
    assert!(matches!(
        blobs.check_intact(hash).await,
        Err(BlobError::Corrupt(_))
    ));
    assert!(!file.exists());
}

#[tokio::test]
async fn a_data_file_that_cannot_be_read_is_refused_and_kept_one_removed_forgotten() {
    let tmp = tempfile::tempdir().unwrap();
    let (blobs, _thread, hash, file) = one_blob(tmp.path()).await;
    // Reads fail where the file was (a directory stands in for a failing disk: open
    // works, read fails).
    let aside = tmp.path().join("aside");
    std::fs::rename(&file, &aside).unwrap();
    std::fs::create_dir(&file).unwrap();
    let r = blobs.check_intact(hash).await;
    assert!(matches!(r, Err(BlobError::Io(_))), "{r:?}");
    assert!(blobs.meta(&hash).is_some_and(|m| m.complete), "forgotten");
    assert!(file.is_dir(), "removed");
    // Asked again: refused without reading it again.
    let again = blobs.check_intact(hash).await.unwrap_err().to_string();
    assert!(
        again.contains("could not be read") && again.contains("Is a directory"),
        "{again}"
    );
    // Readable again: checked and served.
    std::fs::remove_dir(&file).unwrap();
    std::fs::rename(&aside, &file).unwrap();
    assert!(blobs.check_intact(hash).await.unwrap());
    assert_eq!(files::hash_stamped(&file).unwrap().0, hash);

    // Both its files gone, as when the blob directory's disk is not mounted: refused,
    // and kept as recorded (with its pin) for when the disk is back.
    let ob = Paths::new(file.parent().unwrap(), &hash).outboard;
    let ob_aside = tmp.path().join("ob-aside");
    std::fs::rename(&file, &aside).unwrap();
    std::fs::rename(&ob, &ob_aside).unwrap();
    let r = blobs.check_intact(hash).await.unwrap_err().to_string();
    assert!(r.contains("is its disk mounted?"), "{r}");
    assert!(blobs.meta(&hash).is_some_and(|m| m.complete), "forgotten");
    std::fs::rename(&aside, &file).unwrap();
    std::fs::rename(&ob_aside, &ob).unwrap();
    assert!(blobs.check_intact(hash).await.unwrap());

    // The data file alone gone (removed by hand): forgotten, so that it can be fetched
    // again (and is not announced).
    std::fs::remove_file(&file).unwrap();
    let r = blobs.check_intact(hash).await;
    assert!(matches!(r, Err(BlobError::Missing(_))), "{r:?}");
    assert!(blobs.meta(&hash).is_none());
}

#[tokio::test]
async fn an_output_is_filled_from_the_stored_copy_and_says_whether_it_stayed_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (blobs, _thread, hash, file) = one_blob(tmp.path()).await;
    let data_dir = tmp.path().join("data");
    let to = tmp.path().join("linked");
    let filled = output::copy_out(&file, &to, &hash, None, &data_dir).unwrap();
    assert!(filled.verdict == Verdict::Good && filled.hashed);
    // Nothing but our link and rename touched it: its stamp once placed is its stamp.
    let placed = filled.placed.expect("nothing wrote to it");
    assert_eq!(files::stamp(&file).unwrap(), placed);
    assert!(placed.unwritten_since(&filled.opened));
    assert_eq!(ino(&to), ino(&file));
    // As marked: linked again without hashing, to another name and then to the same
    // name again (where the rename does nothing and the temporary name is unlinked):
    // each time the stamp once placed is the file's, so the next is not hashed either.
    let mut marked = placed;
    for name in ["again", "again", "linked"] {
        let to = tmp.path().join(name);
        let filled = output::copy_out(&file, &to, &hash, Some(marked), &data_dir).unwrap();
        assert!(filled.verdict == Verdict::Good && !filled.hashed, "{name}");
        assert_eq!(ino(&to), ino(&file));
        marked = filled.placed.expect("nothing wrote to it");
        assert_eq!(files::stamp(&file).unwrap(), marked, "{name}");
    }
    // Not the blob: nothing placed, whatever the output's name held.
    let other = [7u8; 32];
    let to = tmp.path().join("wrong");
    let filled = output::copy_out(&file, &to, &other, None, &data_dir).unwrap();
    assert_eq!(filled.verdict, Verdict::Corrupt);
    assert!(!to.exists());
    drop(blobs);
}

fn ino(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// Writes `byte` at offset 0 of a sealed stored copy, as its owner can after a `chmod`.
fn write_in_place(file: &Path, byte: u8) {
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[byte], 0).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
}

#[tokio::test]
async fn a_copy_written_to_while_it_is_copied_out_is_not_placed_and_not_taken_for_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (blobs, _thread, hash, file) = one_blob(tmp.path()).await;
    let data_dir = tmp.path().join("data");
    let first = std::fs::read(&file).unwrap()[0];
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Linked and hashed (never marked), linked on trust (as marked), copied on trust
    // and copied hashed (as `-o` onto another file system does): each time the same
    // byte is written back while the bytes are read, so the copy still hashes to the
    // blob, and each time its stamp moved.
    let link = |marked| {
        let to = out.join("linked");
        let (f, d) = (file.clone(), data_dir.clone());
        output::copy_out(&f, &to, &hash, marked, &d).map(|filled| (filled, to))
    };
    let copy = |marked| {
        let to = out.join("copied");
        let output = Output::create(&to, &data_dir).unwrap();
        let src = std::fs::File::open(&file).unwrap();
        output
            .copied(&file, src, &hash, marked)
            .map(|filled| (filled, to))
    };
    type Fill<'a> = &'a dyn Fn(Option<files::Stamp>) -> std::io::Result<(output::Filled, PathBuf)>;
    let cases: [(&str, Fill, bool); 4] = [
        ("linked, hashed", &link, false),
        ("linked on trust", &link, true),
        ("copied on trust", &copy, true),
        ("copied, hashed", &copy, false),
    ];
    for (what, fill, trusted) in cases {
        let marked = trusted.then(|| files::stamp(&file).unwrap());
        let f = file.clone();
        crate::lock(&super::faults::WHILE_READ)
            .push((file.clone(), Box::new(move || write_in_place(&f, first))));
        let (filled, to) = fill(marked).unwrap();
        assert_eq!(filled.verdict, Verdict::Changed, "{what}");
        assert_eq!(filled.hashed, !trusted, "{what}");
        assert!(
            filled.placed.is_none() && !to.exists(),
            "{what}: nothing placed"
        );
        assert!(file.exists(), "{what}: the stored copy is kept");
    }
    // A changed byte after the copy was opened, and nothing during the read: hashed,
    // since the copy is no longer as marked, and found corrupt.
    let marked = files::stamp(&file).unwrap();
    write_in_place(&file, first.wrapping_add(1));
    let (filled, to) = link(Some(marked)).unwrap();
    assert!(filled.hashed);
    assert_eq!(filled.verdict, Verdict::Corrupt);
    assert!(!to.exists());
    assert!(
        std::fs::read_dir(&out).unwrap().next().is_none(),
        "no temporary left"
    );
    drop(blobs);
}

#[tokio::test]
async fn a_copy_written_to_while_it_is_checked_for_a_peer_is_kept_and_checked_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (blobs, _thread, hash, file) = one_blob(tmp.path()).await;
    let first = std::fs::read(&file).unwrap()[0];
    // Unmarked, as after a restart; the same byte written back while it is hashed.
    blobs.mark_intact_or_not(hash, None);
    let f = file.clone();
    crate::lock(&super::faults::WHILE_READ)
        .push((file.clone(), Box::new(move || write_in_place(&f, first))));
    assert!(!blobs.check_intact(hash).await.unwrap(), "answered busy");
    assert!(file.exists(), "not removed as corrupt");
    assert!(blobs.meta(&hash).is_some_and(|m| m.complete));
    assert!(!blobs.is_intact(&hash).await);
    // Asked again: hashed again, and served.
    assert!(blobs.check_intact(hash).await.unwrap());
    assert!(blobs.is_intact(&hash).await);
}
