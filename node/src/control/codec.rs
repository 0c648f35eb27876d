//! Control-socket frames: a 4-byte big-endian length, then that many bytes of CBOR.
//! The one place the node encodes or decodes CBOR.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;
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
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len as usize > MAX_FRAME {
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
        assert!(matches!(
            read::<u8, _>(&mut garbage.as_slice()).await,
            Err(FrameError::Malformed(_))
        ));
    }
}
