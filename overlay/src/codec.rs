//! The request-response codec: length-prefixed opaque frames with explicit maximum sizes.
//!
//! The overlay moves bytes; what they mean (CBOR sync messages, blob chunks) is for the
//! layers above. A frame is a 4-byte big-endian length, then that many bytes. A frame
//! larger than the configured maximum is refused before it is read.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

/// Frames of bytes, bounded in size.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    pub max_request: usize,
    pub max_response: usize,
}

/// Bytes of a frame made readable at a time: the buffer grows by this much only as bytes
/// arrive, so a peer that announces a large frame and sends little costs little.
const STEP: usize = 256 << 10;

/// At most this much is set aside at once for an answer (a 4 MiB blob piece and its proof
/// fit).
const RESERVE: usize = 8 << 20;

/// Reads one frame. With `reserve` (answers to our own requests), once the first [`STEP`]
/// has arrived the rest goes into a kept buffer ([`crate::buffers`]) when there is one of
/// about the announced length; else the rest of that length, up to [`RESERVE`], is set
/// aside at once. Either way a bulk answer lands in place, not through a buffer that
/// doubles and zero-fills as it grows. A peer that announces much and sends little costs
/// little: nothing large is taken before [`STEP`] bytes came, fresh memory is written only
/// as bytes arrive, and a kept buffer is one the node held anyway.
async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    reserve: bool,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(STEP));
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            if reserve && filled == STEP {
                match crate::buffers::take(len) {
                    // Written once already: the rest is read into it as it is.
                    Some(mut kept) => {
                        kept[..filled].copy_from_slice(&buf);
                        buf = kept;
                    }
                    None => buf.reserve_exact(len.min(RESERVE) - filled),
                }
            }
            if filled == buf.len() {
                buf.resize(filled + (len - filled).min(STEP), 0);
            }
        }
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated frame",
            ));
        }
        filled += n;
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    max: usize,
) -> io::Result<()> {
    if data.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the limit of {max}", data.len()),
        ));
    }
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.max_request, false).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.max_response, true).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &req, self.max_request).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        let written = write_frame(io, &res, self.max_response).await;
        // A bulk answer's buffer serves the next one.
        crate::buffers::give(res);
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use request_response::Codec;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut c = FrameCodec {
            max_request: 8,
            max_response: 8,
        };
        let p = StreamProtocol::new("/t");
        let mut buf = Cursor::new(Vec::new());
        c.write_request(&p, &mut buf, b"hello".to_vec())
            .await
            .unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(c.read_request(&p, &mut rd).await.unwrap(), b"hello");

        let mut big = Cursor::new(Vec::new());
        assert!(c.write_request(&p, &mut big, vec![0; 9]).await.is_err());

        // A peer claiming 4 GiB is refused before anything is allocated.
        let mut claim = Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        let err = c.read_request(&p, &mut claim).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // A truncated frame is an error, not a hang.
        let mut short = Cursor::new(vec![0, 0, 0, 5, 1, 2]);
        assert!(c.read_request(&p, &mut short).await.is_err());
    }

    #[tokio::test]
    async fn a_bulk_answer_read_into_a_kept_buffer_holds_only_its_own_bytes() {
        let mut c = FrameCodec {
            max_request: 8,
            max_response: 4 << 20,
        };
        let p = StreamProtocol::new("/t");
        let len = crate::buffers::MIN + 3;
        let frame = |body: &[u8]| {
            let mut f = (len as u32).to_be_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        for _ in 0..3 {
            // Stale bytes in a kept buffer, longer than the next answer.
            crate::buffers::give(vec![0xaa; len + 100]);
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let got = c
                .read_response(&p, &mut Cursor::new(frame(&body)))
                .await
                .unwrap();
            assert!(got == body, "the answer is its own bytes, at its length");
            crate::buffers::give(got);
            // Cut short: an error, whatever buffer it was read into.
            let short = frame(&body[..len / 2]);
            let err = c
                .read_response(&p, &mut Cursor::new(short))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
