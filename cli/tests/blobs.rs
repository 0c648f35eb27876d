//! End-to-end tests of blobs: real daemons on 127.0.0.1 fetch verified ranges from the
//! providers the DHT names — across a node they were never connected to, past a provider
//! that lies, and through a provider that dies mid-transfer — and collect under a quota.

mod common;

use common::blobs::*;
use common::{run_ok, start_net, wait_for_ok, Net};
use lattice_node::blobs::wire::BlobResponse;
use lattice_node::control::api;
use lattice_overlay::{Event, Keypair, Overlay, Protocol};
use lattice_testnet::daemon::Daemon;

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
