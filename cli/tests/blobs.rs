//! End-to-end tests of blobs: real daemons on 127.0.0.1 fetch verified ranges from the
//! providers the DHT names — across a node they were never connected to, past a provider
//! that lies, and through a provider that dies mid-transfer — and collect under a quota.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use common::{run_ok, start_net, wait_for_ok, Net};
use lattice_node::blobs::wire::BlobResponse;
use lattice_node::control::api::{self, method};
use lattice_node::control::Client;
use lattice_overlay::{Event, Keypair, Overlay, Protocol};
use lattice_testnet::daemon::Daemon;
use serde_json::Value;

const MIB: usize = 1 << 20;

/// A file of `len` pseudo-random bytes (BLAKE3's output stream seeded by `seed`).
fn random_file(dir: &Path, seed: u8, len: usize) -> (PathBuf, String) {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut bytes);
    let path = dir.join(format!("file-{seed}"));
    std::fs::write(&path, &bytes).unwrap();
    (path, blake3::hash(&bytes).to_hex().to_string())
}

fn add(d: &Daemon, path: &Path) -> String {
    let v = run_ok(d, &["blob", "add", path.to_str().unwrap()]);
    v["hash"].as_str().unwrap().to_owned()
}

fn connected_to(d: &Daemon, peer: &str) -> bool {
    run_ok(d, &["peers"])
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["peer_id"] == peer && p["connected"] == true)
}

/// Waits until `d` finds at least `n` providers of `hash` in the DHT.
fn wait_providers(d: &Daemon, hash: &str, n: usize) {
    wait_for_ok("providers in the DHT", || {
        let ps = d.json(&["blob", "providers", hash])?;
        Ok((ps.as_array().is_some_and(|a| a.len() >= n)).then_some(()))
    });
}

/// Starts `blob get` on `d` through the control socket; its progress events arrive on the
/// receiver until the fetch ends or the daemon goes away.
/// Fails if a temporary output file (`.NAME.lattice-…`) was left in `dir`.
fn no_strays(dir: &Path) {
    let strays: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".lattice-"))
        .collect();
    assert!(strays.is_empty(), "temporary files left behind: {strays:?}");
}

fn fetch_in_background(
    d: &Daemon,
    hash: &str,
    out: Option<&Path>,
) -> (
    std::thread::JoinHandle<()>,
    std_mpsc::Receiver<api::FetchEvent>,
) {
    let (tx, rx) = std_mpsc::channel();
    let socket = d.socket.clone();
    let params = api::FetchParams {
        hash: hash.to_owned(),
        out: out.map(|o| o.to_str().unwrap().to_owned()),
    };
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = Client::connect(&socket).await.unwrap();
            let id = c.stream::<method::BlobGet>(&params).await.unwrap();
            while let Ok(Some(p)) = c.next_event(&id).await {
                if tx.send(p).is_err() {
                    return;
                }
            }
        });
    });
    (thread, rx)
}

/// `blob get` through the CLI; returns the final `done` report.
fn get(d: &Daemon, hash: &str, out: &Path) -> Value {
    let v = run_ok(d, &["blob", "get", hash, "-o", out.to_str().unwrap()]);
    v["done"].clone()
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[test]
fn a_blob_added_on_one_node_is_fetched_verified_by_a_node_that_never_met_it() {
    let mut net = Net::new();
    net.start(&[]);
    let a_addr = net.nodes[0].addr().unwrap();
    net.start(&["--bootstrap".into(), a_addr]);
    let b_addr = net.nodes[1].addr().unwrap();
    net.start(&["--bootstrap".into(), b_addr]);
    let a_id = net.nodes[0].peer_id().unwrap();
    // C knows only B; it is kept away from A until the fetch starts.
    run_ok(&net.nodes[2], &["net", "block", &a_id]);
    wait_for_ok("C to drop any connection to A", || {
        Ok((!connected_to(&net.nodes[2], &a_id)).then_some(()))
    });
    let (file, b3) = random_file(net.tmp.path(), 1, 64 * MIB);
    let added = run_ok(&net.nodes[0], &["blob", "add", file.to_str().unwrap()]);
    let hash = added["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash, b3, "the blob's hash is the file's plain BLAKE3");
    // Its CID names the same blob; C looks it up and fetches it by that.
    let cid = added["cid"].as_str().unwrap().to_owned();
    assert!(cid.starts_with("bafkr4"), "{added}");
    wait_for_ok("C to find A as a provider", || {
        let ps = net.nodes[2].json(&["blob", "providers", &cid])?;
        Ok((ps
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["peer_id"] == a_id.as_str())))
        .then_some(()))
    });
    run_ok(&net.nodes[2], &["net", "unblock", &a_id]);
    let out = net.tmp.path().join("fetched");
    let done = get(&net.nodes[2], &cid, &out);
    same_file(&file, &out);
    assert_eq!(done["blob"]["complete"], true);
    assert_eq!(done["blob"]["hash"], hash.as_str());
    // Bytes on the wire for the ranges and their proofs, against the blob's size.
    let received = done["received"].as_f64().unwrap();
    assert!(received / (64 * MIB) as f64 <= 1.01, "{done}");
    // C now provides it too, and lists it.
    let ls = run_ok(&net.nodes[2], &["blob", "ls"]);
    assert_eq!(ls[0]["hash"], hash.as_str());
    assert_eq!(ls[0]["cid"], cid.as_str());
    // A CID of another kind is refused, saying why.
    let other = net.nodes[2]
        .cli(&[
            "blob",
            "get",
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
        ])
        .unwrap();
    assert!(!other.status.success());
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(said.contains("codec 0x70"), "{said}");
    assert_eq!(run_ok(&net.nodes[2], &["status"])["blobs"], 1);
}

/// How a [`liar`] lies.
#[derive(Clone, Copy)]
enum Lie {
    /// Passes on what `honest` answers, with a byte flipped in every range.
    FlipBytes,
    /// Answers every request with a size of `u64::MAX`.
    HugeSize,
}

/// An overlay node in this process that answers blob requests with a `lie`; it announces
/// itself as a provider of `hash`.
async fn liar(honest: &Daemon, hash: &str, lie: Lie) -> (Overlay, String) {
    let mut cfg = lattice_overlay::Config::new(Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.mdns = false;
    cfg.upnp = false;
    cfg.bootstrap = vec![honest.addr().unwrap().parse().unwrap()];
    let (o, mut events, _task) = lattice_overlay::spawn(cfg, None).await.unwrap();
    let honest_id = honest.peer_id().unwrap().parse().unwrap();
    o.dial(honest.addr().unwrap().parse().unwrap())
        .await
        .unwrap();
    let key = lattice_node::blobs::parse_hash(hash).unwrap();
    let me = o.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Event::Request {
                protocol,
                data,
                responder,
                ..
            } = e
            {
                if protocol != Protocol::Blob {
                    continue;
                }
                let o = me.clone();
                if let Lie::HugeSize = lie {
                    let _ = o.respond(responder, BlobResponse::Size(u64::MAX).encode());
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut resp) = o.request(honest_id, Protocol::Blob, data).await else {
                        return;
                    };
                    // Encoded ranges are long; a size answer is a few bytes: leave it.
                    if resp.len() > 4096 {
                        let i = resp.len() - 100;
                        resp[i] ^= 0x55;
                    }
                    let _ = o.respond(responder, resp);
                });
            }
        }
    });
    // The size liar provides under the bare digest, as nodes before multihash keys did:
    // lookups still find such providers when nobody is under the new key.
    let dht_key = match lie {
        Lie::HugeSize => key.to_vec(),
        Lie::FlipBytes => lattice_node::dht_keys::blob(&key),
    };
    o.provide(dht_key).await.unwrap();
    let id = o.peer_id().to_string();
    (o, id)
}

#[test]
fn a_provider_that_lies_is_caught_and_the_fetch_completes_from_another() {
    let net = start_net(2);
    let (file, _) = random_file(net.tmp.path(), 2, 16 * MIB);
    let hash = add(&net.nodes[0], &file);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_liar, liar_id) = rt.block_on(liar(&net.nodes[0], &hash, Lie::FlipBytes));
    wait_providers(&net.nodes[1], &hash, 2);
    let out = net.tmp.path().join("fetched");
    let done = get(&net.nodes[1], &hash, &out);
    same_file(&file, &out);
    assert_eq!(
        done["bad_providers"],
        serde_json::json!([liar_id]),
        "{done}"
    );
    assert!(net.nodes[1].log_tail(200).contains("do not verify"));
}

#[test]
fn a_provider_claiming_an_impossible_size_is_dropped_as_a_liar() {
    let net = start_net(2);
    // A blob nobody has: the liar is its only provider (found under the old key format).
    let hash = "ab".repeat(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_liar, liar_id) = rt.block_on(liar(&net.nodes[0], &hash, Lie::HugeSize));
    wait_providers(&net.nodes[1], &hash, 1);
    let out = net.tmp.path().join("never");
    let r = net.nodes[1]
        .cli(&["blob", "get", &hash, "-o", out.to_str().unwrap()])
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    // Before: the fetch died creating a 16 EiB file ("File too large").
    assert!(stderr.contains("no provider proved"), "{stderr}");
    let log = net.nodes[1].log_tail(200);
    assert!(
        log.contains("larger than 1 TiB") && log.contains(&liar_id),
        "{log}"
    );
    // The node is unharmed and no partial file of that size was left behind.
    run_ok(&net.nodes[1], &["status"]);
    assert!(run_ok(&net.nodes[1], &["blob", "ls"])
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_provider_killed_mid_transfer_costs_only_its_pieces_in_flight() {
    let mut net = start_net(3);
    let (file, _) = random_file(net.tmp.path(), 3, 64 * MIB);
    let hash = add(&net.nodes[0], &file);
    // Node 1 fetches first, so there are two providers.
    get(&net.nodes[1], &hash, &net.tmp.path().join("copy1"));
    wait_providers(&net.nodes[2], &hash, 2);
    let out = net.tmp.path().join("fetched");
    let (fetcher, rx) = fetch_in_background(&net.nodes[2], &hash, Some(&out));
    // Kill node 0 once a quarter of the blob is verified.
    let mut killed = false;
    let mut end = None;
    for p in rx.iter() {
        match p {
            api::FetchEvent::Progress { have, size, .. } if !killed && have * 4 >= size => {
                net.nodes[0].kill();
                killed = true;
            }
            api::FetchEvent::Progress { .. } => {}
            other => {
                end = Some(other);
                break;
            }
        }
    }
    fetcher.join().unwrap();
    assert!(killed, "the fetch ended before a quarter was verified");
    match end {
        Some(api::FetchEvent::Done { received, .. }) => {
            same_file(&file, &out);
            // Verified ranges are not fetched again: at most the pieces that were in
            // flight to the dead provider (4 × 4 MiB) come twice.
            assert!(
                received <= (64 * MIB + 17 * MIB) as u64,
                "received {received}"
            );
        }
        other => panic!("fetch did not complete: {other:?}"),
    }
}

#[test]
fn the_quota_collects_old_unpinned_blobs_and_keeps_pinned_ones() {
    let mut net = Net::new();
    net.start(&[]);
    let boot = net.nodes[0].addr().unwrap();
    net.start(&[
        "--bootstrap".into(),
        boot,
        "--blob-quota".into(),
        "5M".into(),
    ]);
    let hashes: Vec<String> = (10..13)
        .map(|seed| {
            let (file, _) = random_file(net.tmp.path(), seed, 2 * MIB);
            add(&net.nodes[0], &file)
        })
        .collect();
    let fetcher = &net.nodes[1];
    for (i, h) in hashes.iter().enumerate() {
        wait_providers(fetcher, h, 1);
        get(fetcher, h, &net.tmp.path().join(format!("out{i}")));
        if i == 0 {
            run_ok(fetcher, &["blob", "pin", h]);
        }
    }
    // Collection follows a fetch's end (the CLI may exit first): wait for the store to
    // be back under the quota.
    let listed = || -> Vec<String> {
        run_ok(fetcher, &["blob", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["hash"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_for_ok("the quota to be enforced", || {
        Ok((listed().len() <= 2).then_some(()))
    });
    let held = listed();
    assert!(held.contains(&hashes[0]), "the pinned blob was collected");
    assert!(
        !held.contains(&hashes[1]),
        "the oldest unpinned blob was kept over the quota"
    );
    assert!(held.contains(&hashes[2]));
    // The node that added them keeps all three: added blobs are never collected.
    assert_eq!(
        run_ok(&net.nodes[0], &["blob", "ls"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn a_fetch_interrupted_by_a_crash_resumes_from_the_verified_ranges() {
    let mut net = start_net(2);
    let (file, _) = random_file(net.tmp.path(), 4, 96 * MIB);
    let hash = add(&net.nodes[0], &file);
    wait_providers(&net.nodes[1], &hash, 1);
    // Start the fetch, and kill -9 the fetching daemon once most of it is verified. It
    // streams into its output file as it goes.
    let out = net.tmp.path().join("resumed");
    let (fetcher, rx) = fetch_in_background(&net.nodes[1], &hash, Some(&out));
    for p in rx.iter() {
        match p {
            api::FetchEvent::Progress { have, size, .. } if have * 4 >= size * 3 => break,
            api::FetchEvent::Progress { .. } => {}
            other => panic!("the fetch ended before it could be interrupted: {other:?}"),
        }
    }
    net.nodes[1].kill();
    fetcher.join().unwrap();
    net.nodes[1].restart().unwrap();
    let partial = run_ok(&net.nodes[1], &["blob", "ls"]);
    let have = partial[0]["have"].as_u64().unwrap();
    assert_eq!(partial[0]["complete"], false, "{partial}");
    assert!(
        have >= (32 * MIB) as u64,
        "nothing verified survived the crash: {partial}"
    );
    assert!(!out.exists(), "half a file at the output");
    // Fetching again brings only what is missing.
    wait_providers(&net.nodes[1], &hash, 1);
    let done = get(&net.nodes[1], &hash, &out);
    same_file(&file, &out);
    let received = done["received"].as_u64().unwrap();
    assert!(
        received <= (96 * MIB) as u64 - have + (MIB as u64),
        "received {received} after resuming with {have} verified"
    );
    // What the killed fetch was writing is gone too.
    no_strays(net.tmp.path());
}

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
    let second = net.tmp.path().join("second");
    get(&net.nodes[1], &hash, &second);
    assert_eq!(inode(&second), inode(&stored));
    // Again to an output that is already the same file: rename(2) does nothing there,
    // and the temporary name must not stay.
    get(&net.nodes[1], &hash, &first);
    no_strays(net.tmp.path());
    // The user writes to their file: that is the store's copy too. The next copy out
    // finds it changed, hashes it, and drops it as corrupt rather than hand it over.
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[4321] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    let third = net.tmp.path().join("third");
    let r = net.nodes[1]
        .cli(&["blob", "get", &hash, "-o", third.to_str().unwrap()])
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "a changed copy was handed over");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(!third.exists());
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
    std::fs::write(&stored, bytes).unwrap();
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
fn a_fetch_that_finished_just_before_a_crash_is_recorded_complete() {
    let mut net = start_net(2);
    let (file, hash) = random_file(net.tmp.path(), 10, 4 * MIB);
    run_ok(&net.nodes[0], &["blob", "add", file.to_str().unwrap()]);
    wait_providers(&net.nodes[1], &hash, 1);
    get(&net.nodes[1], &hash, &net.tmp.path().join("first"));
    // The crash: the `.data` file is in place, but the record still says incomplete.
    net.nodes[1]
        .terminate(std::time::Duration::from_secs(10))
        .unwrap();
    let db = net.nodes[1].data_dir.join("lattice.redb");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (store, thread) = lattice_node::store::Store::open(&db).unwrap();
        let mut meta = store
            .blobs()
            .await
            .unwrap()
            .into_iter()
            .find(|m| lattice_node::blobs::files::hex(&m.hash) == hash)
            .unwrap();
        meta.complete = false;
        meta.verified = vec![(0, 1)];
        store.put_blob(meta).await.unwrap();
        drop(store);
        thread.join();
    });
    net.nodes[1].restart().unwrap();
    // Before: a new fetch resumed into a zero-filled `.part` and renamed it over the
    // good file. Now start-up hashes the file and records the blob complete.
    let ls = run_ok(&net.nodes[1], &["blob", "ls"]);
    assert_eq!(ls[0]["complete"], true, "{ls}");
    let out = net.tmp.path().join("again");
    get(&net.nodes[1], &hash, &out);
    same_file(&file, &out);
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
