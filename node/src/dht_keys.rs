//! The DHT keys under which blobs, documents and services are provided: BLAKE3
//! multihashes (code 0x1e, 32-byte digest; 34 bytes in all), the form other DHT
//! implementations decode keys in. A blob's key is the multihash inside its CID
//! (`bafkr4…`); a document's is the multihash of its id, itself BLAKE3 of its genesis; a
//! service's is the multihash of BLAKE3 `derive_key("lattice service v1", name)`.
//!
//! Nodes before these keys provided the bare 32-byte digests. A lookup that finds nobody
//! under the new key asks under the old one too, so providers that have not been
//! upgraded are still found; they, in turn, do not find providers that have.

use lattice_crdt::DocId;
use lattice_overlay::{Error, Overlay, PeerId};

/// Multicodec code of BLAKE3 (a 32-byte digest here).
pub const BLAKE3: u8 = 0x1e;
pub const DIGEST_LEN: u8 = 32;

/// The BLAKE3 multihash of a 32-byte digest: `1e 20 || digest`.
pub fn multihash(digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(34);
    out.extend_from_slice(&[BLAKE3, DIGEST_LEN]);
    out.extend_from_slice(digest);
    out
}

pub fn blob(hash: &[u8; 32]) -> Vec<u8> {
    multihash(hash)
}

pub fn doc(id: &DocId) -> Vec<u8> {
    multihash(&id.0)
}

pub fn service(name: &str) -> Vec<u8> {
    let mut h = blake3::Hasher::new_derive_key("lattice service v1");
    h.update(name.as_bytes());
    multihash(h.finalize().as_bytes())
}

/// Providers of `key` (one of the above), falling back to the key of older nodes.
pub async fn providers(overlay: &Overlay, key: Vec<u8>) -> Result<Vec<PeerId>, Error> {
    let found = overlay.providers(key.clone()).await?;
    match key.get(2..) {
        Some(old) if found.is_empty() => overlay.providers(old.to_vec()).await,
        _ => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_blake3_multihashes_and_the_old_key_is_the_digest() {
        let h = *blake3::hash(b"").as_bytes();
        let k = blob(&h);
        assert_eq!(k.len(), 34);
        assert_eq!(&k[..2], &[0x1e, 0x20]);
        assert_eq!(&k[2..], &h);
        assert_eq!(
            doc(&DocId(h)),
            k,
            "a document id is a digest like any other"
        );
        let s = service("sensor.temperature");
        assert_eq!(&s[..2], &[0x1e, 0x20]);
        assert_ne!(s, service("sensor.humidity"));
    }
}
