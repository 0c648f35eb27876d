//! Control-socket frames: a 4-byte big-endian length, then that many bytes of CBOR.
//! The one place the node encodes or decodes CBOR.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;
/// The largest request the daemon accepts: a 1 MiB value and then some. Answers may be
/// larger (up to [`MAX_FRAME`]).
pub const MAX_REQUEST: usize = 4 << 20;
/// The largest hello the daemon accepts.
pub const MAX_HELLO: usize = 64 << 10;
/// Once a frame's length has arrived, its body must follow within this time, so a client
/// that stalls mid-frame cannot hold a connection slot forever.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(u64),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one frame's bytes. Refuses an oversized frame before reading its body, and
/// grows the buffer as bytes arrive rather than trusting the announced length.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    read_frame_max(r, MAX_FRAME).await
}

/// [`read_frame`] with a smaller limit.
pub async fn read_frame_max<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len as usize > max {
        return Err(FrameError::TooLarge(len.into()));
    }
    let mut buf = Vec::with_capacity((len as usize).min(64 << 10));
    let mut body = (&mut *r).take(len.into());
    let n = tokio::time::timeout(BODY_TIMEOUT, body.read_to_end(&mut buf))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "frame body not received in time",
            )
        })??;
    if n != len as usize {
        return Err(FrameError::Closed);
    }
    Ok(buf)
}

/// Most CBOR items (values, keys, string chunks) a request may hold. Checked on the raw
/// bytes before decoding: decoded, each item costs some 40 bytes, so a 16 MiB frame of
/// tiny items would otherwise cost most of a gigabyte.
pub const MAX_ITEMS: usize = 65_536;
/// Deepest nesting of arrays, maps and tags in a request.
pub const MAX_DEPTH: usize = 64;

/// Walks the CBOR item headers of `bytes` without decoding anything, refusing more than
/// `max` items, nesting deeper than [`MAX_DEPTH`], or lengths past the end.
pub fn check_items(bytes: &[u8], max: usize) -> Result<(), FrameError> {
    let bad = |why: &str| FrameError::Malformed(why.to_owned());
    // Items still to read at each open level; None: indefinite, until a break.
    let mut levels: Vec<Option<u64>> = vec![Some(1)];
    let (mut pos, mut items) = (0usize, 0usize);
    while let Some(level) = levels.last_mut() {
        match level {
            Some(0) => {
                levels.pop();
                continue;
            }
            Some(n) => *n -= 1,
            None => {}
        }
        let indefinite = level.is_none();
        let head = *bytes.get(pos).ok_or_else(|| bad("truncated CBOR"))?;
        pos += 1;
        if head == 0xff {
            if !indefinite {
                return Err(bad("a break outside an indefinite-length item"));
            }
            levels.pop();
            continue;
        }
        items += 1;
        if items > max {
            return Err(bad(&format!("more than {max} CBOR items in one request")));
        }
        let (major, info) = (head >> 5, head & 0x1f);
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => {
                let len = 1usize << (info - 24);
                let raw = bytes
                    .get(pos..pos + len)
                    .ok_or_else(|| bad("truncated CBOR"))?;
                pos += len;
                Some(raw.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
            }
            31 if matches!(major, 2..=5) => None,
            _ => return Err(bad("invalid CBOR header")),
        };
        match (major, arg) {
            (2 | 3, Some(n)) => {
                pos = usize::try_from(n)
                    .ok()
                    .and_then(|n| pos.checked_add(n))
                    .filter(|end| *end <= bytes.len())
                    .ok_or_else(|| bad("a string longer than the frame"))?;
            }
            (4, n) => levels.push(n),
            (5, n) => levels.push(match n {
                Some(n) => Some(n.checked_mul(2).ok_or_else(|| bad("a map too large"))?),
                None => None,
            }),
            (2 | 3, None) => levels.push(None),
            (6, _) => levels.push(Some(1)),
            _ => {}
        }
        if levels.len() > MAX_DEPTH + 1 {
            return Err(bad(&format!("CBOR nested deeper than {MAX_DEPTH}")));
        }
    }
    Ok(())
}

/// Reads and decodes one frame.
pub async fn read<T: DeserializeOwned, R: AsyncRead + Unpin>(r: &mut R) -> Result<T, FrameError> {
    let bytes = read_frame(r).await?;
    decode(&bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    serde_cbor::from_slice(bytes).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Encodes one frame's body, refusing one over [`MAX_FRAME`].
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let bytes = serde_cbor::to_vec(value).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Writes one encoded frame body.
pub async fn write_encoded<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), FrameError> {
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Encodes and writes one frame.
pub async fn write<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    write_encoded(w, &encode(value)?).await
}

/// A typed value as a CBOR value (for `result` and `params`).
pub fn to_value<T: Serialize>(v: &T) -> Result<serde_cbor::Value, FrameError> {
    serde_cbor::value::to_value(v).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// A CBOR value as a typed value.
pub fn from_value<T: DeserializeOwned>(v: serde_cbor::Value) -> Result<T, FrameError> {
    serde_cbor::value::from_value(v).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let mut buf = Vec::new();
        write(&mut buf, &("hi", 3u8)).await.unwrap();
        let back: (String, u8) = read(&mut buf.as_slice()).await.unwrap();
        assert_eq!(back, ("hi".into(), 3));
        let claim = [0xffu8, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut claim.as_slice()).await,
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame(&mut [].as_slice()).await,
            Err(FrameError::Closed)
        ));
        let garbage = [0u8, 0, 0, 2, 0xff, 0xff];
        assert!(check_items(&[0xff, 0xff], MAX_ITEMS).is_err());
        assert!(matches!(
            read::<u8, _>(&mut garbage.as_slice()).await,
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn item_counting_passes_requests_and_refuses_floods_depth_and_lies() {
        let req = serde_cbor::to_vec(&serde_json::json!({
            "id": 1, "method": "doc.add",
            "params": {"doc": "d", "key": "k", "members": ["a", "b", "c"]}
        }))
        .unwrap();
        check_items(&req, MAX_ITEMS).unwrap();
        // Indefinite-length items count like the others.
        check_items(&[0x9f, 0x01, 0x7f, 0x61, b'a', 0xff, 0xff], 10).unwrap();
        // A flood of tiny items, cheap on the wire, costly decoded.
        let flood = serde_cbor::to_vec(&vec![0u8; 100_000]).unwrap();
        assert!(check_items(&flood, MAX_ITEMS).is_err());
        // Deep nesting, and lengths past the end.
        assert!(check_items(&[0x81; 100], MAX_ITEMS).is_err());
        assert!(check_items(&[0x7a, 0xff, 0xff, 0xff, 0xff], MAX_ITEMS).is_err());
        assert!(check_items(
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            MAX_ITEMS
        )
        .is_err());
        assert!(check_items(
            &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            MAX_ITEMS
        )
        .is_err());
    }
}
