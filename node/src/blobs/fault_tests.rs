//! `blob add` over a file system that fails at each step (an I/O error, or no space), and
//! over a store whose record fails: the add reports the failure (a full disk says so);
//! after a restart nothing of a failed add shows or is left behind, a copy stored before
//! is intact, and the next add works.

use std::io;
use std::path::Path;

use super::faults;
use super::files::{self, Paths, Step};
use super::*;
use crate::store::faulty::{Fault, FaultyDisk};

pub(super) async fn overlay() -> Overlay {
    let mut cfg = lattice_overlay::Config::new(lattice_overlay::Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.mdns = false;
    cfg.upnp = false;
    let (o, mut events, _task) = lattice_overlay::spawn(cfg, None).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    o
}

/// The files in the blob directory, by name.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What a restarted node holds of `hash`: listed complete, and its bytes intact.
fn holds(blobs: &Blobs, dir: &Path, hash: &[u8; 32]) -> bool {
    let listed = blobs.meta(hash).is_some_and(|m| m.complete);
    if listed {
        let data = Paths::new(dir, hash).data;
        assert_eq!(
            &files::hash_stamped(&data).unwrap().0,
            hash,
            "a listed blob is damaged"
        );
    }
    listed
}

/// One case: the add fails at `at` (None: the record) with `kind`; `before`: the same
/// blob was stored before.
async fn case(overlay: &Overlay, at: Option<Step>, kind: io::ErrorKind, before: bool) {
    let what = format!("{at:?} {kind:?} stored before: {before}");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.join("blobs");
    std::fs::create_dir_all(&data).unwrap();
    let src = tmp.path().join("src.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let hash = *blake3::hash(&bytes).as_bytes();

    let disk = FaultyDisk::new(7);
    let (store, thread) = Store::open_faulty(&disk).unwrap();
    let blobs = Blobs::open(&data, store.clone(), overlay.clone(), None)
        .await
        .unwrap();
    if before {
        blobs.add(src.clone()).await.unwrap();
    }
    match at {
        Some(step) => faults::arm(&dir, step, kind),
        None => disk.plan(0, Fault::Error),
    }
    let err = blobs.add(src.clone()).await.expect_err(&what);
    if kind == io::ErrorKind::StorageFull {
        assert!(err.to_string().contains("disk full"), "{what}: {err}");
    }
    // Restart (after a power cut, for the store).
    drop(blobs);
    drop(store);
    thread.join();
    disk.reboot();
    let (store, thread) = Store::open_faulty(&disk).expect("the store opens");
    let blobs = Blobs::open(&data, store.clone(), overlay.clone(), None)
        .await
        .expect("the node starts");
    let held = holds(&blobs, &dir, &hash);
    if at.is_some() {
        // Reported failed: shows only if it was there before, and then intact.
        assert_eq!(held, before, "{what}");
    }
    let mine = [Paths::new(&dir, &hash)]
        .iter()
        .flat_map(|p| {
            [&p.data, &p.outboard].map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        })
        .collect::<Vec<_>>();
    let expected: Vec<String> = if held { mine.clone() } else { Vec::new() };
    let mut expected = expected;
    expected.sort();
    assert_eq!(files_in(&dir), expected, "{what}: files left behind");
    // And the next add works.
    blobs
        .add(src)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(holds(&blobs, &dir, &hash), "{what}");
    // Hashed on its way in: served without hashing it again.
    assert!(blobs.is_intact(&hash).await, "{what}");
    drop(blobs);
    drop(store);
    thread.join();
}

#[tokio::test]
async fn a_blob_add_that_fails_at_any_step_leaves_nothing_and_harms_no_stored_copy() {
    let overlay = overlay().await;
    let mut cases = 0;
    for before in [false, true] {
        for step in Step::ALL {
            for kind in [io::ErrorKind::Other, io::ErrorKind::StorageFull] {
                case(&overlay, Some(step), kind, before).await;
                cases += 1;
            }
        }
        case(&overlay, None, io::ErrorKind::Other, before).await;
        cases += 1;
    }
    assert_eq!(cases, 30);
}
