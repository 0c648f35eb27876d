//! Typed identifiers: [`ActorId`] (who wrote) and [`DocId`] (which document).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The identity of a writer: 32 opaque bytes. A Lattice node uses its Ed25519 public key,
/// so a delta's author is also the key that signs it. Ordered bytewise; the order breaks
/// last-writer-wins ties.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ActorId(pub [u8; 32]);

impl ActorId {
    /// A deterministic actor id for tests and simulations: `n` in the first eight bytes.
    pub fn from_index(n: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        ActorId(bytes)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({self})")
    }
}

impl fmt::Display for ActorId {
    /// The first eight bytes in hex: enough to tell actors apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for ActorId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::ByteArray::new(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ActorId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_bytes::ByteArray::<32>::deserialize(d).map(|b| ActorId(b.into_array()))
    }
}

/// A document id: BLAKE3 of the creator's key, the document's name and a nonce, written in
/// lowercase base32 without padding (52 characters).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocId(pub [u8; 32]);

/// A string that is not a valid [`DocId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid document id {0:?}: expected 52 base32 characters")]
pub struct ParseDocIdError(pub String);

impl DocId {
    /// Derives the id of a document that `creator` names `name`; the nonce keeps two
    /// documents of the same name by the same creator apart.
    pub fn derive(creator: &ActorId, name: &str, nonce: &[u8; 16]) -> Self {
        let mut h = blake3::Hasher::new_derive_key("lattice doc id v1");
        h.update(&creator.0);
        h.update(&(name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update(nonce);
        DocId(*h.finalize().as_bytes())
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.0)
                .to_ascii_lowercase(),
        )
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({self})")
    }
}

impl FromStr for DocId {
    type Err = ParseDocIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = data_encoding::BASE32_NOPAD
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| ParseDocIdError(s.to_owned()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ParseDocIdError(s.to_owned()))?;
        Ok(DocId(arr))
    }
}

impl Serialize for DocId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::ByteArray::new(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for DocId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_bytes::ByteArray::<32>::deserialize(d).map(|b| DocId(b.into_array()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_id_round_trips_through_base32() {
        let id = DocId::derive(&ActorId::from_index(7), "notes", &[1; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<DocId>().unwrap(), id);
    }

    #[test]
    fn doc_id_depends_on_every_input() {
        let a = ActorId::from_index(1);
        let base = DocId::derive(&a, "x", &[0; 16]);
        assert_ne!(base, DocId::derive(&ActorId::from_index(2), "x", &[0; 16]));
        assert_ne!(base, DocId::derive(&a, "y", &[0; 16]));
        assert_ne!(base, DocId::derive(&a, "x", &[1; 16]));
    }

    #[test]
    fn bad_doc_ids_are_refused() {
        assert!("".parse::<DocId>().is_err());
        assert!("not base32 at all!".parse::<DocId>().is_err());
        assert!("aaaa".parse::<DocId>().is_err());
    }
}
