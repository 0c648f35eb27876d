//! The mark a complete blob carries once its bytes were hashed ([`Blobs::check_intact`]):
//! kept across nothing but our own link or rename, lost at a write, and a data file that
//! cannot be read is refused and kept rather than removed as corrupt.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::fault_tests::overlay;
use super::files::{self, Paths};
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
    let verified = blobs.intact_stamp(&hash).expect("hashed on its way in");

    // Our own link and rename (as `blob get -o` makes): still intact.
    let out = tmp.path().join("out");
    std::fs::hard_link(&file, tmp.path().join("tmp")).unwrap();
    std::fs::rename(tmp.path().join("tmp"), &out).unwrap();
    blobs.mark_intact_since(hash, verified);
    assert!(blobs.is_intact(&hash));

    // A write between the stamp and the mark (by a user who made the file writable
    // again, or root) is not taken in by it. It also grows the file: seen whatever the
    // file system's timestamp granularity.
    let verified = blobs.intact_stamp(&hash).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut &f, b"\xff").unwrap();
    blobs.mark_intact_since(hash, verified);
    assert!(!blobs.is_intact(&hash));
    // So the next serve hashes it and finds it corrupt.
    assert!(matches!(
        blobs.check_intact(hash).await,
        Err(BlobError::Corrupt(_))
    ));
    assert!(!file.exists());
}

#[tokio::test]
async fn a_data_file_that_cannot_be_read_is_refused_and_kept_one_that_is_gone_forgotten() {
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

    // Gone: forgotten, so that it can be fetched again (and is not announced).
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
    let filled = output::copy_out(&file, &to, Some(&hash), &data_dir).unwrap();
    assert!(filled.good && filled.hashed);
    // Nothing but our link and rename touched it: its stamp once placed is its stamp.
    let placed = filled.placed.expect("nothing wrote to it");
    assert_eq!(files::stamp(&file).unwrap(), placed);
    assert!(placed.unwritten_since(&filled.opened));
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&to).unwrap()),
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap())
    );
    // Not the blob: nothing placed, whatever the output's name held.
    let other = [7u8; 32];
    let to = tmp.path().join("wrong");
    let filled = output::copy_out(&file, &to, Some(&other), &data_dir).unwrap();
    assert!(!filled.good);
    assert!(!to.exists());
    drop(blobs);
}
