//! HTTP/1.1 message body framing, decoded off a connection's read buffer:
//! fixed length, chunked (RFC 9112 §7.1) or until the peer closes. Shared by
//! the backend response bodies and the client request bodies, so both sides
//! of the proxy frame bodies by the same rules.

use std::io;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::SizeHint;
use tokio::io::AsyncRead;

use super::BoxError;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

/// Where a body decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

/// One step of decoding.
#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    /// More bytes must be read before anything can be decoded.
    NeedMore,
    /// The body is complete.
    End,
}

pub fn invalid(msg: &str) -> BoxError {
    Box::new(io::Error::new(io::ErrorKind::InvalidData, msg.to_string()))
}

impl Decoder {
    /// Decodes what it can from the front of `buf`. `eof`: the peer closed
    /// the connection and `buf` holds all that will ever come.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Decoded, BoxError> {
        loop {
            match *self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::UntilClose if buf.is_empty() && eof => {
                    *self = Decoder::Done;
                    return Ok(Decoded::End);
                }
                _ if buf.is_empty() && eof => {
                    return Err(invalid("the connection closed mid-body"));
                }
                Decoder::UntilClose if buf.is_empty() => return Ok(Decoded::NeedMore),
                Decoder::UntilClose => return Ok(Decoded::Data(buf.split().freeze())),
                Decoder::Length(remaining) | Decoder::ChunkData(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = remaining.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    let left = remaining - n as u64;
                    *self = match (*self, left) {
                        (Decoder::Length(_), 0) => Decoder::Done,
                        (Decoder::Length(_), left) => Decoder::Length(left),
                        (_, 0) => Decoder::ChunkEnd,
                        (_, left) => Decoder::ChunkData(left),
                    };
                    return Ok(Decoded::Data(data));
                }
                Decoder::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Decoder::ChunkSize;
                }
                Decoder::ChunkSize | Decoder::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if *self == Decoder::Trailers {
                        // Trailers are not forwarded; the blank line ends the body.
                        if line.is_empty() {
                            *self = Decoder::Done;
                            return Ok(Decoded::End);
                        }
                        continue;
                    }
                    let size = line.split(|b| *b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size)
                        .ok()
                        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                        .ok_or_else(|| invalid("invalid chunk size"))?;
                    *self = if size == 0 {
                        Decoder::Trailers
                    } else {
                        Decoder::ChunkData(size)
                    };
                }
            }
        }
    }

    /// Bytes still to come, exact when the framing says.
    pub fn size_hint(&self) -> SizeHint {
        match self {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

/// A complete CRLF-terminated line from the buffer, without the CRLF.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(at) => {
            let line = buf.split_to(at).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(invalid("chunk-size or trailer line too long")),
        None => Ok(None),
    }
}

/// Reads more from `stream` into `buf`; `Ok(0)` is end of stream.
///
/// Through `AsyncRead` rather than `try_read`: a read that leaves room in
/// the buffer tells tokio the socket is drained, so the next wait for data
/// costs no `recv` that would only say `EAGAIN` — one syscall per request
/// less on a keep-alive connection.
pub fn poll_fill<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    tokio_util::io::poll_read_buf(std::pin::Pin::new(stream), cx, buf)
}

/// Decodes the next piece of a body, reading from `stream` as needed.
/// `Ok(None)`: the body is complete.
pub fn poll_body<R: AsyncRead + Unpin>(
    decoder: &mut Decoder,
    stream: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Bytes>, BoxError>> {
    let mut eof = false;
    loop {
        match decoder.decode(buf, eof)? {
            Decoded::Data(data) => return Poll::Ready(Ok(Some(data))),
            Decoded::End => return Poll::Ready(Ok(None)),
            Decoded::NeedMore if eof => {
                return Poll::Ready(Err(invalid("the connection closed mid-body")));
            }
            Decoded::NeedMore => eof = ready!(poll_fill(stream, buf, cx))? == 0,
        }
    }
}

/// One end of a connection a body is read from: the backend's (response
/// bodies) or the client's (request bodies).
pub trait BodySource {
    /// The connection's reading side.
    type Io: AsyncRead + Unpin;
    /// The connection and its read buffer, while the body still reads.
    fn io(&mut self) -> Option<(&mut Self::Io, &mut BytesMut)>;
    /// Runs before each read; may write something first (`100 Continue`).
    fn poll_start(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    /// The body ended, completely or (after an error) not.
    fn finish(&mut self, complete: bool);
}

/// A body decoded off a connection as its framing says.
pub struct FramedBody<S> {
    source: S,
    decoder: Decoder,
}

impl<S: BodySource> FramedBody<S> {
    pub fn new(mut source: S, decoder: Decoder) -> Self {
        if decoder == Decoder::Done {
            source.finish(true);
        }
        FramedBody { source, decoder }
    }
}

impl<S: BodySource + Unpin> http_body::Body for FramedBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Err(e) = ready!(this.source.poll_start(cx)) {
            this.source.finish(false);
            return Poll::Ready(Some(Err(e)));
        }
        let Some((stream, buf)) = this.source.io() else {
            return Poll::Ready(None);
        };
        let next = ready!(poll_body(&mut this.decoder, stream, buf, cx));
        if next.is_err() {
            this.source.finish(false);
        } else if this.decoder == Decoder::Done {
            this.source.finish(true);
        }
        Poll::Ready(next.transpose().map(|d| d.map(http_body::Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.decoder == Decoder::Done
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(mut d: Decoder, input: &[u8]) -> Result<Vec<u8>, BoxError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf, true)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End => return Ok(out),
                Decoded::NeedMore => unreachable!("eof given"),
            }
        }
    }

    #[test]
    fn lengths_chunks_and_close_delimited() {
        assert_eq!(decode_all(Decoder::Length(3), b"abcdef").unwrap(), b"abc");
        assert_eq!(
            decode_all(
                Decoder::ChunkSize,
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n"
            )
            .unwrap(),
            b"hello world"
        );
        assert_eq!(decode_all(Decoder::UntilClose, b"rest").unwrap(), b"rest");
        let e = decode_all(Decoder::Length(10), b"short").unwrap_err();
        assert!(e.to_string().contains("mid-body"), "{e}");
        let e = decode_all(Decoder::ChunkSize, b"2\r\nhiXX").unwrap_err();
        assert!(e.to_string().contains("CRLF"), "{e}");
    }

    #[test]
    fn a_partial_chunk_header_waits_for_more() {
        let mut d = Decoder::ChunkSize;
        let mut buf = BytesMut::from(&b"1"[..]);
        assert!(matches!(d.decode(&mut buf, false), Ok(Decoded::NeedMore)));
        buf.extend_from_slice(b"0\r\n");
        assert!(matches!(d.decode(&mut buf, false), Ok(Decoded::NeedMore)));
        assert_eq!(d, Decoder::ChunkData(16));
    }
}
