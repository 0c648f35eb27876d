//! The one place this crate touches CBOR: encoding, and size-bounded decoding of
//! untrusted bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes that do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed CBOR: {0}")]
    Malformed(String),
}

/// Encodes a value as CBOR. The encoding of this crate's types is canonical: equal values
/// encode to equal bytes (maps are ordered, documents use sorted actor tables).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail, and none of this crate's types has a fallible
    // Serialize impl.
    serde_cbor::to_vec(value).expect("CBOR encoding into memory is infallible for lattice types")
}

/// Decodes untrusted bytes, refusing anything larger than `max` before parsing it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    serde_cbor::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let err = decode::<Vec<u8>>(&[0u8; 100], 10).unwrap_err();
        assert_eq!(err, CodecError::TooLarge { len: 100, max: 10 });
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        assert!(matches!(
            decode::<u64>(&[0xff, 0x00, 0x13], 100),
            Err(CodecError::Malformed(_))
        ));
        let mut bytes = encode(&7u64);
        bytes.push(0);
        assert!(matches!(
            decode::<u64>(&bytes, 100),
            Err(CodecError::Malformed(_))
        ));
    }
}
