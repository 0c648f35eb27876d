//! Signing and verifying deltas with nodes' Ed25519 keys: a writer's actor id is its
//! Ed25519 public key, so a delta's author is also the key that must have signed it.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use lattice_crdt::sync::Authenticator;
use lattice_crdt::ActorId;
use lattice_overlay::identity::{ed25519, Keypair, PublicKey};
use lattice_overlay::PeerId;

/// Signatures remembered as verified, so a replayed message costs a hash per delta
/// instead of a curve check.
const VERIFIED_CACHE: usize = 65_536;

/// Keys of verified signatures: a set to look up, and their order to forget the oldest.
type Verified = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

/// Signs as this node; verifies anyone.
pub struct NodeAuth {
    key: ed25519::Keypair,
    /// BLAKE3 of (author, signature, signed bytes) of recent good signatures, oldest first.
    verified: Mutex<Verified>,
}

/// A key that cannot sign deltas.
#[derive(Debug, thiserror::Error)]
#[error("the node identity is not an Ed25519 key")]
pub struct NotEd25519;

impl NodeAuth {
    pub fn new(key: &Keypair) -> Result<Self, NotEd25519> {
        Ok(NodeAuth {
            key: key.clone().try_into_ed25519().map_err(|_| NotEd25519)?,
            verified: Mutex::default(),
        })
    }

    /// This node's actor id.
    pub fn actor(&self) -> ActorId {
        ActorId(self.key.public().to_bytes())
    }
}

impl Authenticator for NodeAuth {
    fn sign(&self, _author: &ActorId, msg: &[u8]) -> Vec<u8> {
        self.key.sign(msg)
    }

    fn verify(&self, author: &ActorId, msg: &[u8], signature: &[u8]) -> bool {
        // The key covers the signed bytes, so a cached signature never vouches for other
        // content.
        let key = *blake3::Hasher::new()
            .update(&author.0)
            .update(&(signature.len() as u64).to_le_bytes())
            .update(signature)
            .update(msg)
            .finalize()
            .as_bytes();
        // Never held across the curve check below: verifying threads do not wait on it.
        let lock = || crate::lock(&self.verified);
        if lock().0.contains(&key) {
            return true;
        }
        let good = verify_strict(author, msg, signature);
        if good {
            let mut g = lock();
            if g.0.insert(key) {
                g.1.push_back(key);
                if g.1.len() > VERIFIED_CACHE {
                    if let Some(old) = g.1.pop_front() {
                        g.0.remove(&old);
                    }
                }
            }
        }
        good
    }
}

/// RFC 8032's check, made strict (ed25519-dalek's `verify_strict`): a public key of small
/// order, which would accept one signature for every message, is refused, and so is a
/// non-canonical or small-order R. libp2p's `verify` is the lenient check.
fn verify_strict(author: &ActorId, msg: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&author.0) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(msg, &sig).is_ok()
}

/// The actor id of a peer, if its peer id embeds an Ed25519 key (as Lattice nodes' do).
pub fn actor_of_peer(peer: &PeerId) -> Option<ActorId> {
    let mh = peer.as_ref();
    // Ed25519 peer ids are identity multihashes (code 0) of the protobuf-encoded key.
    if mh.code() != 0 {
        return None;
    }
    let pk = PublicKey::try_decode_protobuf(mh.digest())
        .ok()?
        .try_into_ed25519()
        .ok()?;
    Some(ActorId(pk.to_bytes()))
}

/// The peer id of an actor.
pub fn peer_of_actor(actor: &ActorId) -> Option<PeerId> {
    let pk = ed25519::PublicKey::try_from_bytes(&actor.0).ok()?;
    Some(PublicKey::from(pk).to_peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_author_and_bytes() {
        let k = Keypair::generate_ed25519();
        let auth = NodeAuth::new(&k).unwrap();
        let me = auth.actor();
        let sig = auth.sign(&me, b"delta");
        assert!(auth.verify(&me, b"delta", &sig));
        assert!(!auth.verify(&me, b"other", &sig));
        let other = NodeAuth::new(&Keypair::generate_ed25519()).unwrap().actor();
        assert!(!auth.verify(&other, b"delta", &sig));
        assert!(
            !auth.verify(&ActorId([0; 32]), b"delta", &sig),
            "garbage keys verify nothing"
        );
        // Verified once, then from the cache; the cache never vouches for other bytes.
        assert!(auth.verify(&me, b"delta", &sig));
        assert!(!auth.verify(&me, b"delta!", &sig));
    }

    /// With a small-order public key, the cofactorless check RFC 8032 allows accepts one
    /// signature for every message: here the identity point as the key, and the identity
    /// point with S = 0 as the signature. Nobody holds such a key's secret, so anybody
    /// could write as that author; a strict check refuses the key.
    #[test]
    fn a_small_order_key_verifies_nothing() {
        let auth = NodeAuth::new(&Keypair::generate_ed25519()).unwrap();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        for msg in [&b"delta"[..], b"any other delta"] {
            let lenient = ed25519::PublicKey::try_from_bytes(&identity).unwrap();
            assert!(
                lenient.verify(msg, &sig),
                "the lenient check takes the forgery"
            );
            assert!(!auth.verify(&ActorId(identity), msg, &sig));
        }
    }

    #[test]
    fn peer_ids_and_actor_ids_map_both_ways() {
        let k = Keypair::generate_ed25519();
        let peer = k.public().to_peer_id();
        let actor = NodeAuth::new(&k).unwrap().actor();
        assert_eq!(actor_of_peer(&peer), Some(actor));
        assert_eq!(peer_of_actor(&actor), Some(peer));
    }
}
