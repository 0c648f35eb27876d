//! End-to-end tests of `blob get -o`: where the output goes (a hard link to the stored copy
//! on its file system, written as the fetch goes elsewhere), what a write to it or damage
//! to the stored copy does, and that it never lands inside the data directory.

mod common;

use std::path::{Path, PathBuf};

use common::blobs::*;
use common::{run_ok, start_net, Net};

/// A random file added on the first node and found by the second; the file, its hash,
/// and where the second node stores it once fetched.
fn added_on_first(net: &Net, seed: u8, len: usize) -> (PathBuf, String, PathBuf) {
    let (file, hash) = random_file(net.tmp.path(), seed, len);
    add(&net.nodes[0], &file);
    wait_providers(&net.nodes[1], &hash, 1);
    let stored = net.nodes[1]
        .data_dir
        .join("blobs")
        .join(format!("{hash}.data"));
    (file, hash, stored)
}

/// The inode number of `p`.
fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn an_output_beside_the_store_is_a_link_to_it_and_a_write_to_it_is_caught() {
    let net = start_net(2);
    let (file, hash, stored) = added_on_first(&net, 11, 6 * MIB);
    // A fresh fetch, and a blob already held, both linked: no second copy of the bytes.
    let first = net.tmp.path().join("first");
    get(&net.nodes[1], &hash, &first);
    same_file(&file, &first);
    assert_eq!(
        inode(&first),
        inode(&stored),
        "the output is not the store's file"
    );
    // Read-only: `cp x first` or `> first` fails rather than reach the store's copy.
    assert_eq!(mode(&first) & 0o222, 0, "writable");
    let second = net.tmp.path().join("second");
    get(&net.nodes[1], &hash, &second);
    assert_eq!(inode(&second), inode(&stored));
    // Again to an output that is already the same file: rename(2) does nothing there,
    // and the temporary name must not stay.
    get(&net.nodes[1], &hash, &first);
    no_strays(net.tmp.path());
    // Our own links and renames did not cost the blob its mark as hashed.
    let rehashed = "hashed again before it is served";
    let log = std::fs::read_to_string(&net.nodes[1].log).unwrap();
    assert!(!log.contains(rehashed), "{log}");
    // The user writes to their file anyway: that is the store's copy too. The next copy
    // out finds it changed, hashes it, and drops it as corrupt rather than hand it over.
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[4321] ^= 1;
    write_anyway(&first, &bytes);
    let third = net.tmp.path().join("third");
    let r = net.nodes[1]
        .cli(&["blob", "get", &hash, "-o", third.to_str().unwrap()])
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "a changed copy was handed over");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(!third.exists());
    let log = std::fs::read_to_string(&net.nodes[1].log).unwrap();
    assert!(log.contains(rehashed), "{log}");
    // The user's file is theirs: the store dropped only its own name.
    assert_eq!(std::fs::read(&first).unwrap(), bytes);
    assert!(!stored.exists());
    // Fetched again from the provider, whole.
    get(&net.nodes[1], &hash, &third);
    same_file(&file, &third);
    no_strays(net.tmp.path());
}

#[test]
fn an_output_on_another_file_system_is_written_as_the_fetch_goes() {
    // /dev/shm is a tmpfs: another file system than the test's temporary directory.
    let shm = Path::new("/dev/shm");
    let dir = match tempfile::tempdir_in(shm) {
        Ok(d) => d,
        Err(e) => {
            return common::skip(
                "an_output_on_another_file_system",
                &format!("no {}: {e}", shm.display()),
            )
        }
    };
    let net = start_net(2);
    let device = |p: &Path| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap());
    if device(dir.path()) == device(net.tmp.path()) {
        return common::skip(
            "an_output_on_another_file_system",
            "/dev/shm is on the test directory's file system",
        );
    }
    let (file, hash, stored) = added_on_first(&net, 12, 5 * MIB);
    let fresh = dir.path().join("fresh");
    get(&net.nodes[1], &hash, &fresh);
    same_file(&file, &fresh);
    same_file(&file, &stored);
    // Held already: copied.
    let held = dir.path().join("held");
    get(&net.nodes[1], &hash, &held);
    same_file(&file, &held);
    no_strays(dir.path());
}

#[test]
fn a_stored_blob_damaged_on_disk_is_caught_before_it_is_copied_out() {
    let mut net = start_net(1);
    let (file, hash) = random_file(net.tmp.path(), 9, MIB);
    run_ok(&net.nodes[0], &["blob", "add", file.to_str().unwrap()]);
    // Stopped, a byte of the stored copy rots; started again.
    let stored = net.nodes[0]
        .data_dir
        .join("blobs")
        .join(format!("{hash}.data"));
    net.nodes[0]
        .terminate(std::time::Duration::from_secs(10))
        .unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[1234] ^= 0x40;
    write_anyway(&stored, &bytes);
    net.nodes[0].restart().unwrap();
    // The output path holds a file already: a failed copy must leave it as it was.
    let out = net.tmp.path().join("copy");
    std::fs::write(&out, b"keep me").unwrap();
    let r = net.nodes[0]
        .cli(&["blob", "get", &hash, "-o", out.to_str().unwrap()])
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    // Before: the damaged bytes were copied out as the blob.
    assert!(!r.status.success());
    assert!(stderr.contains("corrupt"), "{stderr}");
    // Before: the old file was truncated, then removed.
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"keep me",
        "a failed copy touched the output"
    );
    no_strays(net.tmp.path());
    assert!(run_ok(&net.nodes[0], &["blob", "ls"])
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn blob_get_refuses_to_write_into_the_data_directory_however_the_path_is_spelled() {
    let mut net = start_net(1);
    let (file, hash) = random_file(net.tmp.path(), 11, MIB);
    let d = &net.nodes[0];
    run_ok(d, &["blob", "add", file.to_str().unwrap()]);
    let db = d.data_dir.join("lattice.redb");
    let before = std::fs::read(&db).unwrap();
    // Straight in, through `..`, and through a symlink to the data directory.
    let link = net.tmp.path().join("innocent");
    std::os::unix::fs::symlink(&d.data_dir, &link).unwrap();
    let dotdot = d.data_dir.join("blobs").join("..").join("lattice.redb");
    for out in [db.clone(), dotdot, link.join("lattice.redb")] {
        let r = d
            .cli(&["blob", "get", &hash, "-o", out.to_str().unwrap()])
            .unwrap();
        let said = String::from_utf8_lossy(&r.stderr);
        // Before: the blob was copied over the daemon's own database.
        assert!(!r.status.success(), "{} was written", out.display());
        assert!(said.contains("data directory"), "{said}");
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the database was touched"
    );
    // And the node still starts and holds its blob.
    net.nodes[0].restart().unwrap();
    let listed = run_ok(&net.nodes[0], &["blob", "ls"]);
    assert_eq!(listed[0]["hash"], hash.as_str());
}

#[test]
fn a_stored_copy_removed_behind_the_nodes_back_is_forgotten_and_fetched_again() {
    let mut net = start_net(2);
    let (file, hash, stored) = added_on_first(&net, 13, 2 * MIB);
    let first = net.tmp.path().join("first");
    get(&net.nodes[1], &hash, &first);
    // Its copy removed by hand while the node runs.
    std::fs::remove_file(&first).unwrap();
    std::fs::remove_file(&stored).unwrap();
    let again = net.tmp.path().join("again");
    let r = net.nodes[1]
        .cli(&["blob", "get", &hash, "-o", again.to_str().unwrap()])
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    // Before: "cannot write again: No such file or directory", for ever.
    assert!(!r.status.success());
    assert!(stderr.contains("gone"), "{stderr}");
    assert!(!again.exists());
    // Forgotten: the next `blob get` fetches it again.
    get(&net.nodes[1], &hash, &again);
    same_file(&file, &again);
    no_strays(net.tmp.path());

    // Removed while the node is stopped: forgotten as it starts.
    net.nodes[1]
        .terminate(std::time::Duration::from_secs(10))
        .unwrap();
    std::fs::remove_file(&again).unwrap();
    std::fs::remove_file(&stored).unwrap();
    net.nodes[1].restart().unwrap();
    let listed = run_ok(&net.nodes[1], &["blob", "ls"]);
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");
}
