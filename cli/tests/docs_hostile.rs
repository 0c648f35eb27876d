//! Closed documents and hostile peers, end to end: a non-writer is refused locally, and
//! deltas a stranger injects on the wire — forged, malformed, mis-addressed, badly signed,
//! huge — are rejected by every replica, which keeps its state and keeps serving.
//!
//! The stranger is an overlay node in this process with a key of its own: it speaks the
//! real protocols (`/lattice/sync/1`, the document's gossip topic) to the real daemons.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{create_doc, run_ok, start_net, wait_converged};
use lattice_crdt::sync::{Config, Input, Message, Output, Replica, SeqRange, SignedDelta};
use lattice_crdt::{DocId, Op, OpKind};
use lattice_node::auth::{actor_of_peer, NodeAuth};
use lattice_node::docs::wire::{self, SyncRequest, SyncResponse};
use lattice_overlay::{Keypair, Overlay, Protocol};
use lattice_testnet::daemon::Daemon;

/// A delta written by `key` for `doc`, signed with `key`.
fn delta_by(key: &Keypair, doc: DocId, op: Op) -> SignedDelta {
    let auth = Arc::new(NodeAuth::new(key).unwrap());
    let mut r = Replica::new(doc, auth.actor(), auth, Config::default(), 1);
    r.handle(now_ms(), Input::Write { op, tag: 1 }).unwrap();
    loop {
        match r.poll_output() {
            Some(Output::Persist { delta, .. }) => return delta,
            Some(_) => {}
            None => panic!("the replica produced no delta"),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn stranger(key: Keypair, bootstrap: &Daemon) -> Overlay {
    let mut cfg = lattice_overlay::Config::new(key);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.mdns = false;
    cfg.upnp = false;
    cfg.request_timeout = Duration::from_secs(10);
    let (o, mut events, _task) = lattice_overlay::spawn(cfg, None).await.unwrap();
    // Drain (and ignore) what the overlay reports, so it never stalls.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    o.dial(bootstrap.addr().unwrap().parse().unwrap())
        .await
        .expect("the stranger connects");
    o
}

/// Sends raw bytes on `/lattice/sync/1` and returns the decoded answer (or the error).
async fn send(o: &Overlay, to: &Daemon, bytes: Vec<u8>) -> Result<SyncResponse, String> {
    let peer = to.peer_id().unwrap().parse().unwrap();
    let resp = o
        .request(peer, Protocol::Sync, bytes)
        .await
        .map_err(|e| e.to_string())?;
    SyncResponse::decode(&resp).map_err(|e| e.to_string())
}

fn refused(r: &Result<SyncResponse, String>, why: &str) {
    match r {
        Ok(SyncResponse::Refused(m)) => assert!(m.contains(why), "refused for {m:?}, not {why:?}"),
        Err(e) => assert!(why.is_empty(), "request failed: {e}"),
        Ok(other) => panic!("accepted ({other:?}) where {why:?} was expected"),
    }
}

#[test]
fn closed_documents_refuse_non_writers_locally_and_on_the_wire() {
    let net = start_net(3);
    let (owner, writer, outsider) = (&net.nodes[0], &net.nodes[1], &net.nodes[2]);
    let writer_id = writer.peer_id().unwrap();
    let doc = create_doc(owner, "closed", &["--writer", &writer_id]);
    run_ok(writer, &["doc", "join", &doc]);
    run_ok(outsider, &["doc", "join", &doc]);
    run_ok(owner, &["doc", "set", &doc, "k", "owner"]);
    run_ok(writer, &["doc", "incr", &doc, "n", "2"]);
    let before = wait_converged(&[owner, writer, outsider], &doc);

    // The outsider is refused locally, with an error that says why.
    let out = outsider.cli(&["doc", "set", &doc, "k", "mine"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a writer"), "{err}");
    let out = writer
        .cli(&["doc", "writers", &doc, "--add", &writer_id])
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("owner"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stranger_id = rt.block_on(async {
        let key = Keypair::generate_ed25519();
        let o = stranger(key.clone(), owner).await;
        let id: DocId = doc.parse().unwrap();
        let forged = delta_by(&key, id, Op::new("k", OpKind::Incr(100)));
        for target in [owner, writer, outsider] {
            // A correctly signed delta by a non-writer.
            let r = send(
                &o,
                target,
                SyncRequest::Sync(Message::Delta(forged.clone())).encode(),
            )
            .await;
            refused(&r, "not a writer");
            // The same in a batch.
            let batch = Message::Deltas {
                doc: id,
                deltas: vec![forged.clone()],
                more: false,
            };
            refused(
                &send(&o, target, SyncRequest::Sync(batch).encode()).await,
                "not a writer",
            );
            // Claiming to be the other legitimate writer, with the stranger's signature,
            // as that writer's next write (its first is held everywhere: resending that
            // would be a harmless duplicate). Its values still name the stranger as their
            // writer, so it is refused at the cheapest stage, before any signature check.
            let mut stolen = forged.clone();
            let victim = if std::ptr::eq(target, owner) {
                writer
            } else {
                owner
            };
            stolen.author = actor_of_peer(&victim.peer_id().unwrap().parse().unwrap()).unwrap();
            stolen.seqs = SeqRange::one(2);
            refused(
                &send(
                    &o,
                    target,
                    SyncRequest::Sync(Message::Delta(stolen)).encode(),
                )
                .await,
                "holds a value written by",
            );
            // Not CBOR at all.
            refused(
                &send(&o, target, b"\xff\x00garbage".to_vec()).await,
                "malformed",
            );
            // A delta of a document the node does not hold.
            let other = delta_by(&key, DocId([7; 32]), Op::new("x", OpKind::Incr(1)));
            refused(
                &send(
                    &o,
                    target,
                    SyncRequest::Sync(Message::Delta(other)).encode(),
                )
                .await,
                "no document",
            );
            // Far beyond any limit: refused by the codec before it is read whole.
            refused(&send(&o, target, vec![0u8; 5 << 20]).await, "");
        }
        // The forged delta published on the document's topic goes nowhere either.
        o.subscribe(wire::topic(&id)).await.unwrap();
        let _ = o
            .publish(wire::topic(&id), Message::Delta(forged).encode())
            .await;
        // A peer that keeps at it is blocked.
        for _ in 0..64 {
            if send(&o, writer, b"junk".to_vec()).await.is_err() {
                break;
            }
        }
        o.peer_id()
    });
    let blocked = run_ok(writer, &["status"])["blocked"].clone();
    assert_eq!(blocked, serde_json::json!([stranger_id.to_string()]));

    // Nothing changed anywhere, and every node still serves.
    run_ok(owner, &["doc", "set", &doc, "after", "1"]);
    let after = wait_converged(&[owner, writer, outsider], &doc);
    let mut expected = before.clone();
    expected["after"] = serde_json::json!(1);
    assert_eq!(after, expected);
    // Refusals of what no honest peer sends are logged (and counted as strikes).
    assert!(owner.log_tail(200).contains("refused a sync request"));

    // Removing the writer stops its later writes everywhere.
    run_ok(owner, &["doc", "writers", &doc, "--remove", &writer_id]);
    common::wait_for_ok("the writer to learn it was removed", || {
        let w = writer.json(&["doc", "writers", &doc])?;
        Ok((w["writers"][0]["state"] == "removed").then_some(()))
    });
    let out = writer.cli(&["doc", "incr", &doc, "n", "1"]).unwrap();
    assert!(!out.status.success(), "a removed writer still writes");
    let v = wait_converged(&[owner, writer, outsider], &doc);
    assert_eq!(v["n"], 2);
}

#[test]
fn a_peer_that_syncs_once_and_leaves_is_not_kept_as_a_replica() {
    let net = start_net(1);
    let node = &net.nodes[0];
    let doc = create_doc(node, "open", &["--open"]);
    let replicas = || run_ok(node, &["doc", "info", &doc])["replicas"].clone();
    assert_eq!(replicas(), 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let o = stranger(Keypair::generate_ed25519(), node).await;
        // One summary, without ever subscribing to the document's topic.
        let summary = Message::Summary {
            doc: doc.parse().unwrap(),
            vv: Default::default(),
            reply: true,
            chains: Vec::new(),
            recovering: false,
        };
        let r = send(&o, node, SyncRequest::Sync(summary).encode()).await;
        assert!(matches!(r, Ok(SyncResponse::Ok)), "{r:?}");
        assert_eq!(replicas(), 1);
        // Every handle dropped: the stranger's swarm stops and its connection closes.
        drop(o);
    });
    common::wait_for_ok("the replica to forget the stranger", || {
        Ok((replicas() == 0).then_some(()))
    });
}

#[test]
fn a_writers_edit_with_one_bad_change_changes_nothing() {
    let net = start_net(1);
    let owner = &net.nodes[0];
    let owner_id = owner.peer_id().unwrap();
    let doc = create_doc(owner, "closed", &[]);
    let newcomer = Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let out = owner
        .cli(&[
            "doc", "writers", &doc, "--add", &newcomer, "--remove", &owner_id,
        ])
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("owner"));
    // Before: the add was written (and broadcast) although the command failed.
    let w = run_ok(owner, &["doc", "writers", &doc]);
    assert!(!w.to_string().contains(&newcomer), "{w}");
    run_ok(owner, &["doc", "writers", &doc, "--add", &newcomer]);
    assert!(run_ok(owner, &["doc", "writers", &doc])
        .to_string()
        .contains(&newcomer));
}
