//! The test vectors of docs/wire-protocol.md: each is built here from fixed inputs, must
//! encode to exactly the hex the document shows, and the document's hex must decode and
//! encode again byte for byte. `LATTICE_PRINT_VECTORS=1 cargo test -p lattice-node
//! wire_vectors -- --nocapture` prints them, to update the document after a deliberate
//! change of format.

use std::collections::BTreeMap;
use std::sync::Arc;

use lattice_crdt::sync::{Authenticator, Genesis, Message, SeqRange, SignedDelta};
use lattice_crdt::{codec, ActorId, Doc, DocId, Op, OpKind, Timestamp};
use lattice_overlay::Keypair;

use crate::auth::NodeAuth;
use crate::blobs::wire::{BlobRequest, BlobResponse};
use crate::docs::digests::{self, Shared};
use crate::docs::wire::{DigestRequest, DigestResponse, SyncRequest, SyncResponse};
use crate::services::{Ask, Offer};

const DOC: &str = include_str!("../../docs/wire-protocol.md");

/// The vectors as the document shows them: name → bytes.
fn documented() -> BTreeMap<String, Vec<u8>> {
    let section = DOC
        .split_once("## Test vectors")
        .expect("the document has a test vectors section")
        .1;
    let mut out = BTreeMap::new();
    let mut name: Option<String> = None;
    let mut hex: Option<String> = None;
    for line in section.lines() {
        if let Some(rest) = line.strip_prefix("#### `") {
            name = rest.strip_suffix('`').map(str::to_owned);
        } else if line.starts_with("```") {
            match hex.take() {
                Some(h) => {
                    let n = name
                        .take()
                        .expect("a vector block under a #### `name` heading");
                    let bytes = data_encoding::HEXLOWER
                        .decode(h.as_bytes())
                        .unwrap_or_else(|e| panic!("vector {n}: bad hex: {e}"));
                    assert!(out.insert(n.clone(), bytes).is_none(), "{n} twice");
                }
                None if name.is_some() => hex = Some(String::new()),
                None => {}
            }
        } else if let Some(h) = hex.as_mut() {
            h.extend(line.chars().filter(|c| !c.is_whitespace()));
        }
    }
    out
}

/// The key every signed vector uses: Ed25519 from 32 bytes of 0x01.
fn key() -> Keypair {
    Keypair::ed25519_from_bytes([1; 32]).unwrap()
}

fn genesis(owner: ActorId) -> Genesis {
    Genesis {
        owner,
        name: "notes".into(),
        nonce: [7; 16],
        open: true,
        writers: Vec::new(),
    }
}

/// A vector's name, the bytes the code writes, and a decode-then-encode of its type.
type Vector = (&'static str, Vec<u8>, fn(&[u8]) -> Vec<u8>);

/// The vectors as the code builds them, with a check that the documented bytes decode
/// into the same thing (by encoding again).
fn built() -> Vec<Vector> {
    let auth = NodeAuth::new(&key()).unwrap();
    let me = auth.actor();
    let empty = *blake3::hash(b"").as_bytes();
    let g = genesis(me);
    let doc = g.id();

    // One write: "title" set to "hello" by the owner, the first of its writes.
    let hlc = Timestamp {
        millis: 1_700_000_000_000,
        logical: 0,
    };
    let op = Op::new("title", OpKind::Set("hello".into()));
    let delta = Doc::new(doc).prepare(me, hlc, &op).unwrap();
    let mut signed = SignedDelta {
        doc,
        author: me,
        seqs: SeqRange::one(1),
        hlc,
        delta: Arc::new(delta),
        acl: Vec::new(),
        signature: Vec::new(),
    };
    signed.signature = auth.sign(&me, &signed.signing_bytes());

    let blob_request = |b: &[u8]| BlobRequest::decode(b).unwrap().encode();
    let blob_response = |b: &[u8]| codec::decode::<BlobResponse>(b, 1 << 20).unwrap().encode();
    let sync_request = |b: &[u8]| SyncRequest::decode(b).unwrap().encode();
    let sync_response = |b: &[u8]| SyncResponse::decode(b).unwrap().encode();
    let genesis_bytes = |b: &[u8]| codec::encode(&codec::decode::<Genesis>(b, 1 << 20).unwrap());
    let same = |b: &[u8]| b.to_vec();
    let signing = |b: &[u8]| b.to_vec();
    vec![
        (
            "blob-request-size",
            BlobRequest::Size {
                hash: empty,
                trace: None,
            }
            .encode(),
            blob_request,
        ),
        (
            "blob-request-ranges",
            BlobRequest::Ranges {
                hash: empty,
                ranges: vec![(0, 64), (4096, 4160)],
                trace: None,
            }
            .encode(),
            blob_request,
        ),
        (
            "blob-response-size",
            BlobResponse::Size(1 << 20).encode(),
            blob_response,
        ),
        (
            "blob-response-not-found",
            BlobResponse::NotFound.encode(),
            blob_response,
        ),
        (
            "blob-response-busy",
            BlobResponse::Refused("busy".into()).encode(),
            blob_response,
        ),
        (
            "service-ask",
            codec::encode(&Ask {
                name: "sensor.temperature".into(),
            }),
            |b| codec::encode(&codec::decode::<Ask>(b, 4 << 10).unwrap()),
        ),
        (
            "service-offer",
            codec::encode(&Offer {
                offered: true,
                meta: BTreeMap::from([("unit".to_owned(), "celsius".to_owned())]),
            }),
            |b| codec::encode(&codec::decode::<Offer>(b, 64 << 10).unwrap()),
        ),
        ("genesis", codec::encode(&g), genesis_bytes),
        // The document id: BLAKE3 of the CBOR of ["lattice genesis v1", genesis].
        ("doc-id", doc.0.to_vec(), same),
        (
            "sync-request-genesis",
            SyncRequest::Genesis(doc).encode(),
            sync_request,
        ),
        ("sync-response-ok", SyncResponse::Ok.encode(), sync_response),
        // DHT keys: the empty blob's, that document's, and a service's.
        ("dht-key-blob", crate::dht_keys::blob(&empty), same),
        ("dht-key-doc", crate::dht_keys::doc(&doc), same),
        (
            "dht-key-service",
            crate::dht_keys::service("sensor.temperature"),
            same,
        ),
        (
            "sync-response-genesis",
            SyncResponse::Genesis(g.clone()).encode(),
            sync_response,
        ),
        // A digest comparison: the total over one shared document (the empty document's
        // replica digest under that document's id), and the answer when they agree.
        (
            "digest-request-total",
            DigestRequest::Total(digests::total(&Shared::from([(
                doc,
                empty_replica_digest(doc, me),
            )])))
            .encode(),
            |b| DigestRequest::decode(b).unwrap().encode(),
        ),
        ("digest-response-same", DigestResponse::Same.encode(), |b| {
            DigestResponse::decode(b).unwrap().encode()
        }),
        // The proof of one chunk: the parent pairs that precede its bytes in an encoding.
        ("blob-ranges-proof", ranges_proof(), same),
        // What the author signs, then the whole delta as a sync request.
        ("delta-signing-bytes", signed.signing_bytes(), signing),
        (
            "sync-request-delta",
            SyncRequest::Sync(Message::Delta(signed)).encode(),
            sync_request,
        ),
    ]
}

#[test]
fn the_documented_vectors_are_what_the_code_writes_and_reads() {
    let doc = documented();
    let built = built();
    if std::env::var_os("LATTICE_PRINT_VECTORS").is_some() {
        for (name, bytes, _) in &built {
            println!("#### `{name}`\n\n```\n{}\n```\n", wrap(bytes));
        }
    }
    for (name, bytes, reencode) in &built {
        let shown = doc
            .get(*name)
            .unwrap_or_else(|| panic!("docs/wire-protocol.md has no vector `{name}`"));
        assert_eq!(
            data_encoding::HEXLOWER.encode(shown),
            data_encoding::HEXLOWER.encode(bytes),
            "vector `{name}`: the document differs from what the code writes"
        );
        assert_eq!(
            &reencode(shown),
            shown,
            "vector `{name}` does not re-encode"
        );
    }
    let names: Vec<&str> = built.iter().map(|(n, _, _)| *n).collect();
    for name in doc.keys() {
        assert!(
            names.contains(&name.as_str()),
            "the document shows a vector `{name}` no test builds"
        );
    }
}

#[test]
fn the_documented_delta_signature_verifies() {
    let auth = NodeAuth::new(&key()).unwrap();
    let doc = documented();
    let request = SyncRequest::decode(&doc["sync-request-delta"]).unwrap();
    let SyncRequest::Sync(Message::Delta(d)) = request else {
        panic!("not a delta");
    };
    assert_eq!(d.signing_bytes(), doc["delta-signing-bytes"]);
    assert!(auth.verify(&d.author, &d.signing_bytes(), &d.signature));
    assert_eq!(DocId(doc["doc-id"].clone().try_into().unwrap()), d.doc);
}

/// The digest of a replica that holds nothing yet (no author, no chain).
fn empty_replica_digest(doc: DocId, me: ActorId) -> [u8; 8] {
    let auth = Arc::new(NodeAuth::new(&key()).unwrap());
    lattice_crdt::sync::Replica::new(doc, me, auth, Default::default(), 1).state_digest()
}

/// The blob of the `blob-ranges-proof` vector: 65,536 + 1,000 bytes, byte `i` being
/// `i % 251`: one full 64 KiB chunk group, then a group of one short chunk.
fn proof_blob() -> Vec<u8> {
    (0..66_536u32).map(|i| (i % 251) as u8).collect()
}

/// The encoding of range `[1, 2)` (chunk 1 alone) of [`proof_blob`], written by the
/// store's own encoder, must be parent pairs then the chunk's bytes; the pairs are checked
/// against BLAKE3's tree computed here independently of bao-tree (blake3's hazmat API),
/// and returned.
fn ranges_proof() -> Vec<u8> {
    use crate::blobs::files;
    use blake3::hazmat::{merge_subtrees_root, HasherExt, Mode};

    let data = proof_blob();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::write(&source, &data).unwrap();
    let (hash, size, _) = files::import(dir.path(), &source).unwrap();
    let framed = files::encode(
        &files::Paths::new(dir.path(), &hash),
        &hash,
        size,
        &[(1, 2)],
    )
    .unwrap();
    let stream = framed.payload();

    // The chaining value of chunks [a, b), as a non-root subtree of the blob's tree.
    let cv = |a: usize, b: usize| {
        let end = (b * 1024).min(data.len());
        blake3::Hasher::new()
            .set_input_offset(a as u64 * 1024)
            .update(&data[a * 1024..end])
            .finalize_non_root()
    };
    // Pre-order along the path to chunk 1: the root's children (64 chunks | 1 chunk),
    // then halves of the first group down to chunks 0 and 1.
    let root = (cv(0, 64), cv(64, 65));
    assert_eq!(
        merge_subtrees_root(&root.0, &root.1, Mode::Hash),
        blake3::Hash::from(hash),
        "the tree computed here is not the blob's"
    );
    let mut parents = [root.0, root.1].concat();
    let mut width = 64;
    while width > 1 {
        let half = width / 2;
        parents.extend_from_slice(&cv(0, half));
        parents.extend_from_slice(&cv(half, width));
        width = half;
    }
    assert_eq!(parents.len(), 7 * 64);
    assert_eq!(&stream[..parents.len()], &parents[..], "the pairs differ");
    assert_eq!(
        &stream[parents.len()..],
        &data[1024..2048],
        "then chunk 1's bytes"
    );
    parents
}

/// Hex in lines of 32 bytes.
fn wrap(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|c| data_encoding::HEXLOWER.encode(c))
        .collect::<Vec<_>>()
        .join("\n")
}
