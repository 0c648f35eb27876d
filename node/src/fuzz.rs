//! Fuzz targets for every decoder of untrusted bytes in the daemon: `/lattice/sync/1`,
//! `/lattice/digest/1`, `/lattice/blob/1` and `/lattice/service/1` messages, control-socket frames and
//! requests, and the records the store reads back. Each must never panic; the crdt's own
//! decoders (messages, deltas, states, genesis) are in [`lattice_crdt::fuzz`].
//!
//! `cargo test` runs a bounded pass of each ([`lattice_crdt::fuzz::pass`]); the repository's
//! `fuzz/` folder runs the same functions under cargo-fuzz on nightly.

use std::sync::OnceLock;

use lattice_crdt::codec;
use lattice_crdt::sync::Message;

use crate::blobs::files;
use crate::blobs::wire::{check_ranges, BlobRequest, BlobResponse};
use crate::control::api::{self, Request};
use crate::docs::wire::{DigestRequest, DigestResponse, SyncRequest, SyncResponse};
use crate::services::{Ask, Offer};
use crate::store::{BlobMeta, DocMeta, ServiceAd};

/// A `/lattice/sync/1` request, and what it carries, as a node takes it in.
pub fn sync_request(data: &[u8]) {
    match SyncRequest::decode(data) {
        Ok(SyncRequest::Sync(msg)) => lattice_crdt::fuzz::message(&msg.encode()),
        Ok(SyncRequest::Genesis(id)) => {
            let _ = id.to_string();
        }
        Err(_) => {}
    }
}

/// A `/lattice/sync/1` answer, as a joining node takes it in.
pub fn sync_response(data: &[u8]) {
    if let Ok(SyncResponse::Genesis(g)) = SyncResponse::decode(data) {
        let _ = crate::docs::join::check(&g, None);
    }
}

/// A gossip message on a document's topic.
pub fn gossip(data: &[u8]) {
    if let Ok(m @ Message::Delta(_)) = Message::decode(data) {
        lattice_crdt::fuzz::message(&m.encode());
    }
}

/// A `/lattice/blob/1` request, through the checks that bound its answer.
pub fn blob_request(data: &[u8]) {
    if let Ok(BlobRequest::Ranges { ranges, .. }) = BlobRequest::decode(data) {
        if check_ranges(&ranges, 1 << 30).is_ok() {
            let _ = files::range_set(&ranges);
        }
    }
}

/// A small blob (three chunk groups, the last one short) and its tree in pre-order: what
/// fuzzed blob answers are verified against.
fn fuzz_blob() -> &'static (Vec<u8>, Vec<u8>, bao_tree::blake3::Hash) {
    static BLOB: OnceLock<(Vec<u8>, Vec<u8>, bao_tree::blake3::Hash)> = OnceLock::new();
    BLOB.get_or_init(|| {
        let data: Vec<u8> = (0..FUZZ_BLOB).map(|i| (i % 253) as u8).collect();
        let mut ob = fuzz_outboard(bao_tree::blake3::Hash::from([0; 32]), Vec::new());
        let root = bao_tree::io::sync::outboard(&data[..], ob.tree, &mut ob)
            .expect("an outboard in memory");
        (data, ob.data, root)
    })
}

fn fuzz_outboard(
    root: bao_tree::blake3::Hash,
    tree: Vec<u8>,
) -> bao_tree::io::outboard::PreOrderOutboard<Vec<u8>> {
    bao_tree::io::outboard::PreOrderOutboard {
        root,
        tree: bao_tree::BaoTree::new(FUZZ_BLOB, files::BLOCK),
        data: tree,
    }
}

/// The size of [`fuzz_blob`].
const FUZZ_BLOB: u64 = 150_000;

/// The ranges fuzzed blob answers are taken for: all of [`fuzz_blob`], and its middle group.
const FUZZ_RANGES: [(u64, u64); 2] = [(0, FUZZ_BLOB.div_ceil(files::CHUNK)), (64, 128)];

/// A `/lattice/blob/1` answer, and its verification as the answer for [`FUZZ_RANGES`] of a
/// known blob (only chunk groups that verify may be written).
pub fn blob_response(data: &[u8]) {
    if let Ok(BlobResponse::Encoded(f)) = BlobResponse::decode(data.to_vec()) {
        let (blob, _, root) = fuzz_blob();
        for range in FUZZ_RANGES {
            let mut out = vec![0u8; blob.len()];
            let ob = fuzz_outboard(*root, Vec::new());
            let set = files::range_set(&[range]);
            let _ = crate::blobs::in_place::decode(f.payload(), &set, &mut out[..], ob);
            // Each group written holds the blob's bytes or nothing.
            for (got, want) in out.chunks(64 << 10).zip(blob.chunks(64 << 10)) {
                assert!(
                    got == want || got.iter().all(|b| *b == 0),
                    "unverified bytes written"
                );
            }
        }
    }
}

/// A `/lattice/service/1` question and answer.
pub fn service(data: &[u8]) {
    let _ = codec::decode::<Ask>(data, 4 << 10);
    let _ = codec::decode::<Offer>(data, 64 << 10);
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds")
    })
}

/// Bytes on the control socket: frames (length prefix, body), then requests and the
/// parameters of every method.
pub fn control(data: &[u8]) {
    let mut reader = data;
    let frames = runtime().block_on(async {
        let mut out = Vec::new();
        while let Ok(f) = crate::control::codec::read_frame(&mut reader).await {
            out.push(f);
        }
        out
    });
    for f in frames.iter().map(Vec::as_slice).chain([data]) {
        let Ok(req) = crate::control::codec::decode::<Request>(f) else {
            continue;
        };
        let p = req.params;
        let _ = crate::control::params::<api::CreateParams>(p.clone());
        let _ = crate::control::params::<api::SetParams>(p.clone());
        let _ = crate::control::params::<api::IncrParams>(p.clone());
        let _ = crate::control::params::<api::MembersParams>(p.clone());
        let _ = crate::control::params::<api::WritersParams>(p.clone());
        let _ = crate::control::params::<api::DialParams>(p);
    }
}

/// A `/lattice/digest/1` request or answer, and the comparisons made with what it carries.
pub fn digest(data: &[u8]) {
    use crate::docs::digests::{differing_buckets, differing_docs, listing, Shared};
    let shared: Shared = (0..8u8)
        .map(|i| (lattice_crdt::DocId([i * 31; 32]), [i; 8]))
        .collect();
    if let Ok(DigestRequest::Docs(wanted)) = DigestRequest::decode(data) {
        let _ = listing(&shared, &wanted);
    }
    match DigestResponse::decode(data) {
        Ok(DigestResponse::Buckets(b)) => {
            let _ = differing_buckets(&shared, &b);
        }
        Ok(DigestResponse::Docs(d)) => {
            let _ = differing_docs(&shared, &d);
        }
        _ => {}
    }
}

/// Records the store reads back (a corrupt file is data too).
pub fn stored(data: &[u8]) {
    let _ = codec::decode::<DocMeta>(data, 1 << 20);
    let _ = codec::decode::<BlobMeta>(data, 64 << 20);
    let _ = codec::decode::<ServiceAd>(data, 64 << 10);
}

/// Every target of this crate, by name.
pub const TARGETS: [(&str, lattice_crdt::fuzz::Target); 9] = [
    ("sync_request", sync_request),
    ("sync_response", sync_response),
    ("digest", digest),
    ("gossip", gossip),
    ("blob_request", blob_request),
    ("blob_response", blob_response),
    ("service", service),
    ("control", control),
    ("stored", stored),
];

/// Valid inputs of every kind, to mutate.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = lattice_crdt::fuzz::seeds();
    let msgs: Vec<Message> = out.iter().filter_map(|b| Message::decode(b).ok()).collect();
    for m in msgs {
        out.push(SyncRequest::Sync(m).encode());
    }
    out.push(SyncRequest::Genesis(lattice_crdt::DocId([3; 32])).encode());
    out.push(SyncResponse::Refused("no".into()).encode());
    out.push(DigestRequest::Total([5; 16]).encode());
    out.push(DigestRequest::Docs(vec![0, 13, 63]).encode());
    out.push(DigestResponse::Buckets(vec![9; 512]).encode());
    out.push(DigestResponse::Docs(vec![1; 80]).encode());
    out.push(
        BlobRequest::Ranges {
            hash: [1; 32],
            ranges: vec![(0, 64), (128, 4096)],
            trace: None,
        }
        .encode(),
    );
    out.push(
        BlobRequest::Size {
            hash: [1; 32],
            trace: Some(7),
        }
        .encode(),
    );
    out.push(BlobResponse::Size(1 << 20).encode());
    // Right answers for the blob fuzzed answers are checked against.
    let (blob, tree, root) = fuzz_blob();
    for range in FUZZ_RANGES {
        let mut f = crate::blobs::wire::Framed::new();
        let ob = fuzz_outboard(*root, tree.clone());
        let set = files::range_set(&[range]);
        if bao_tree::io::sync::encode_ranges(blob.clone(), &ob, &set, f.buffer()).is_ok() {
            out.push(BlobResponse::Encoded(f).encode());
        }
    }
    out.push(codec::encode(&Ask {
        name: "sensor.temperature".into(),
    }));
    out.push(codec::encode(&Offer {
        offered: true,
        meta: [("unit".to_owned(), "celsius".to_owned())].into(),
    }));
    let req = Request {
        id: 7,
        method: "doc.set".into(),
        params: crate::control::codec::to_value(&serde_json::json!({
            "doc": "notes", "key": "k", "value": "v"
        }))
        .unwrap_or(serde_cbor::Value::Null),
    };
    let body = serde_cbor::to_vec(&req).unwrap_or_default();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    out.push(body);
    out.push(frame);
    out.push(codec::encode(&BlobMeta {
        hash: [2; 32],
        size: 10,
        complete: false,
        pinned: false,
        local: false,
        added_ms: 1,
        verified: vec![(0, 1)],
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_decoder_of_the_daemon_panics_on_random_or_mutated_input() {
        let seeds = seeds();
        let iters = lattice_crdt::fuzz::iters();
        for (name, target) in TARGETS {
            let f = lattice_crdt::fuzz::pass(name, &seeds, iters, target);
            assert!(f.panics.is_empty(), "{name} panicked on {:?}", f.panics);
        }
    }
}
