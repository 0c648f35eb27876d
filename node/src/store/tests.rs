use std::sync::Arc;

use lattice_crdt::sync::{Config, Input, Output, Replica, TestAuth};
use lattice_crdt::{ActorId, DocId, Op, OpKind};

use super::*;

fn meta() -> DocMeta {
    DocMeta {
        genesis: lattice_crdt::sync::Genesis {
            owner: ActorId::from_index(1),
            name: "t".into(),
            nonce: [0; 16],
            open: true,
            writers: Vec::new(),
        },
        added_ms: 1,
    }
}

fn deltas(n: usize) -> (DocId, Vec<SignedDelta>) {
    let doc = meta().id();
    let mut r = Replica::new(
        doc,
        ActorId::from_index(1),
        Arc::new(TestAuth),
        Config::default(),
        1,
    );
    let mut out = Vec::new();
    for i in 0..n {
        r.handle(
            1_000,
            Input::Write {
                op: Op::new("n", OpKind::Incr(1)),
                tag: i as u64,
            },
        )
        .unwrap();
        while let Some(o) = r.poll_output() {
            if let Output::Persist { ticket, delta } = o {
                out.push(delta);
                r.handle(1_000, Input::Persisted { ticket }).unwrap();
            }
        }
    }
    (doc, out)
}

#[tokio::test]
async fn deltas_survive_a_reopen_and_folds_replace_what_they_cover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lattice.redb");
    let (doc, ds) = deltas(5);
    {
        let (store, thread) = Store::open(&path).unwrap();
        store.put_doc(meta()).await.unwrap();
        // Concurrent writers are committed together, each acknowledged.
        let writes: Vec<_> = ds.iter().map(|d| store.persist(vec![d.clone()])).collect();
        for w in writes {
            w.await.unwrap();
        }
        drop(store);
        thread.join();
    }
    let (store, _thread) = Store::open(&path).unwrap();
    assert_eq!(store.docs().await.unwrap()[0], meta());
    let back = store.load(doc).await.unwrap();
    assert_eq!(back, ds);

    // A fold of seqs 1..=4 (an aligned block) replaces the first four originals.
    let restored = Replica::restore(
        doc,
        ActorId::from_index(1),
        Arc::new(TestAuth),
        Config::default(),
        1,
        lattice_crdt::sync::Acl::open(),
        back,
    );
    let mut r = restored;
    r.handle(
        1_000 + lattice_crdt::sync::replica::MIN_AGE_MS,
        Input::Compact,
    )
    .unwrap();
    let mut folded = None;
    while let Some(o) = r.poll_output() {
        if let Output::Persist { delta, .. } = o {
            folded = Some(delta);
        }
    }
    store.persist(vec![folded.unwrap()]).await.unwrap();
    let after = store.load(doc).await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!((after[0].seqs.first, after[0].seqs.last), (1, 4));

    // Truncating the author at 3 drops the fold that reaches past it.
    let cut = Change::Truncate {
        doc,
        author: ActorId::from_index(1),
        after: 3,
    };
    store.enqueue(vec![cut]).await.unwrap().await.unwrap();
    assert!(store.load(doc).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_document_has_no_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _t) = Store::open(&dir.path().join("x.redb")).unwrap();
    assert!(store.load(DocId([9; 32])).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_damaged_known_peer_is_skipped_and_the_rest_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lattice.redb");
    let good = PeerRecord {
        id: vec![7; 8],
        addrs: vec![serde_bytes::ByteBuf::from(vec![1, 2, 3])],
        seen_ms: 5,
        relay: false,
    };
    {
        let (store, thread) = Store::open(&path).unwrap();
        store
            .save_peers(vec![Change::PutPeer(good.clone())])
            .await
            .unwrap();
        drop(store);
        thread.join();
    }
    {
        // Garbage where a record should be, as a damaged disk might leave it.
        let db = redb::Database::create(&path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w
                .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("peers"))
                .unwrap();
            t.insert([9u8; 8].as_slice(), [0xffu8, 0x00, 0x13].as_slice())
                .unwrap();
        }
        w.commit().unwrap();
    }
    let (store, _thread) = Store::open(&path).unwrap();
    assert_eq!(store.peers().await.unwrap(), vec![good]);
}
