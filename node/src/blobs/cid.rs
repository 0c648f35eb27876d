//! Content ids (CIDv1) for blobs, as IPFS and other libp2p tools write them: version 1,
//! codec `raw` (0x55), and the BLAKE3 multihash (code 0x1e, 32 bytes) of the content; in
//! text, multibase base32 (`bafkr4…`). The multihash inside is the blob's DHT key
//! ([`crate::dht_keys::blob`]).

use crate::dht_keys::{multihash, BLAKE3, DIGEST_LEN};

/// Multicodec code of raw bytes.
const RAW: u8 = 0x55;

/// The CIDv1 of a blob, in base32 (`bafkr4…`).
pub fn cid(hash: &[u8; 32]) -> String {
    let mut bytes = vec![1, RAW];
    bytes.extend(multihash(hash));
    multibase::encode(multibase::Base::Base32Lower, bytes)
}

/// The BLAKE3 hash inside a CID text (any multibase); why not, if it is no BLAKE3 raw CIDv1.
pub fn parse(text: &str) -> Result<[u8; 32], String> {
    let (_, bytes) = multibase::decode(text).map_err(|e| format!("not a CID: {e}"))?;
    // Every code here is below 0x80, so each varint is one byte.
    match bytes.as_slice() {
        [1, RAW, BLAKE3, DIGEST_LEN, digest @ ..] if digest.len() == 32 => {
            let mut out = [0; 32];
            out.copy_from_slice(digest);
            Ok(out)
        }
        [1, RAW, BLAKE3, ..] => Err("a BLAKE3 CID whose digest is not 32 bytes".into()),
        [1, codec, hash, ..] => Err(format!(
            "a CIDv1 with codec 0x{codec:x} and hash 0x{hash:x}: Lattice names blobs by raw \
             BLAKE3 CIDs (codec 0x55, hash 0x1e)"
        )),
        [0x12, 0x20, ..] => Err("a CIDv0 (SHA-256): Lattice names blobs by BLAKE3".into()),
        _ => Err("not a CIDv1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLAKE3 of the empty input, and its CID as `base64.b32encode` of
    /// `01 55 1e 20 || digest`, lowercased, unpadded, with multibase's `b`.
    const EMPTY: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
    const EMPTY_CID: &str = "bafkr4ifpcne3t5pzugtkaqcn5i3nzskjtpfslsnnyejlpte2spfoihzsmi";

    #[test]
    fn the_empty_blob_has_the_known_cid_and_it_reads_back() {
        let hash = *blake3::hash(b"").as_bytes();
        assert_eq!(data_encoding::HEXLOWER.encode(&hash), EMPTY);
        assert_eq!(cid(&hash), EMPTY_CID);
        assert_eq!(parse(EMPTY_CID), Ok(hash));
        // The same CID in base58btc.
        let z = multibase::encode(
            multibase::Base::Base58Btc,
            multibase::decode(EMPTY_CID).unwrap().1,
        );
        assert_eq!(parse(&z), Ok(hash));
        assert_eq!(multihash(&hash)[..2], [0x1e, 0x20]);
    }

    #[test]
    fn other_cids_are_refused_saying_why() {
        // A dag-pb CIDv1 of a SHA-256 hash, and a CIDv0.
        let sha = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        assert!(parse(sha).unwrap_err().contains("codec 0x70"));
        let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        assert!(parse(v0).is_err());
        assert!(parse("").is_err());
        assert!(parse("bafkr4i").is_err());
        // One byte short.
        let short = multibase::encode(multibase::Base::Base32Lower, [1, 0x55, 0x1e, 0x20, 0]);
        assert!(parse(&short).is_err());
    }
}
