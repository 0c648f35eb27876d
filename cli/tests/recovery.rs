//! A node that lost its store but kept its key (issue #11): it joins its documents again,
//! adopts its own writes back from the replicas, and its new writes reach every replica
//! instead of being taken for duplicates of its old ones.

mod common;

use std::time::Duration;

use common::{create_doc, run_ok, start_net, wait_converged, wait_for_ok};

#[test]
fn a_node_whose_store_was_deleted_recovers_its_own_history_and_writes_on() {
    let mut net = start_net(2);
    let doc = create_doc(&net.nodes[0], "shared", &["--open"]);
    {
        let (b, a) = (&net.nodes[0], &net.nodes[1]);
        run_ok(a, &["doc", "join", &doc]);
        for _ in 0..3 {
            run_ok(a, &["doc", "incr", &doc, "a", "1"]);
        }
        run_ok(b, &["doc", "incr", &doc, "b", "1"]);
        wait_converged(&[a, b], &doc);
    }
    // The store goes; the identity stays.
    let a = &mut net.nodes[1];
    a.terminate(Duration::from_secs(10)).unwrap();
    std::fs::remove_file(a.data_dir.join("lattice.redb")).unwrap();
    a.restart().unwrap();
    assert!(run_ok(a, &["doc", "ls"]).as_array().unwrap().is_empty());
    run_ok(a, &["doc", "join", &doc]);
    // Writes wait until a replica has answered; then they continue after the old ones.
    wait_for_ok("the recovered node to accept a write", || {
        let out = a.cli(&["doc", "incr", &doc, "a", "10"])?;
        Ok(out.status.success().then_some(()))
    });
    let (b, a) = (&net.nodes[0], &net.nodes[1]);
    let v = wait_converged(&[a, b], &doc);
    // Before: the new write reused sequence number 1, and the other replica dropped it as
    // a duplicate; the recovered node also refused its own old writes.
    assert_eq!(v, serde_json::json!({"a": 13, "b": 1}));
    assert!(!b.log_tail(400).contains("signed two versions"));
}

#[test]
fn a_store_moved_aside_keeps_the_blobs_added_here() {
    let mut net = start_net(1);
    let src = net.tmp.path().join("only-copy.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let hash = run_ok(&net.nodes[0], &["blob", "add", src.to_str().unwrap()])["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(&src).unwrap();
    // The documented way out of an unreadable store: move it aside and start again.
    let d = &mut net.nodes[0];
    d.terminate(Duration::from_secs(10)).unwrap();
    let db = d.data_dir.join("lattice.redb");
    std::fs::rename(&db, db.with_extension("broken")).unwrap();
    d.restart().unwrap();
    // Before: start-up removed the blob's files as unrecorded; this was the only copy.
    let listed = run_ok(d, &["blob", "ls"]);
    assert_eq!(listed[0]["hash"], hash.as_str(), "{listed}");
    let out = net.tmp.path().join("back.bin");
    run_ok(
        &net.nodes[0],
        &["blob", "get", &hash, "-o", out.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}
