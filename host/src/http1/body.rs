//! HTTP/1.1 message bodies, decoded off a connection's read buffer: fixed
//! length, chunked (RFC 9112 §7.1) or until the peer closes. Shared by the
//! backend response bodies and the client request bodies, so both sides of
//! the proxy frame bodies by the same rules.
//!
//! The chunked grammar is held to the RFC as hyper holds it, and a little
//! stricter: a chunk size is 1 to 16 hex digits and nothing else (`+5`,
//! ` 5`, `5 ` and `0x5` are refused; whitespace may only precede a `;`
//! extension), every line ends in CRLF (a bare LF is refused), and
//! extensions and trailers are bounded.

use std::io;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::SizeHint;
use tokio::io::AsyncRead;

use super::BoxError;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;
/// Most trailer bytes accepted after the last chunk (they are not
/// forwarded, only read past).
const MAX_TRAILERS: u32 = 16 * 1024;
/// Most hex digits of a chunk size: 16 fill a `u64`.
const MAX_SIZE_DIGITS: usize = 16;

/// Where a body decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    /// Trailer bytes seen so far.
    Trailers(u32),
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
                Decoder::Trailers(seen) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    // Trailers are not forwarded; the blank line ends the body.
                    if line.is_empty() {
                        *self = Decoder::Done;
                        return Ok(Decoded::End);
                    }
                    let seen = seen.saturating_add(line.len() as u32 + 2);
                    if seen > MAX_TRAILERS {
                        return Err(invalid("trailer section too large"));
                    }
                    if !line.contains(&b':') || line[0] == b' ' || line[0] == b'\t' {
                        return Err(invalid("invalid trailer line"));
                    }
                    *self = Decoder::Trailers(seen);
                }
                Decoder::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line).ok_or_else(|| invalid("invalid chunk size"))?;
                    *self = if size == 0 {
                        Decoder::Trailers(0)
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

/// The size of a chunk-size line (without its CRLF): `1*HEXDIG`, then
/// nothing, or optional whitespace and `;` extensions of visible
/// characters. `None`: not that grammar.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_SIZE_DIGITS {
        return None;
    }
    let rest = &line[digits..];
    if !rest.is_empty() {
        let blank = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let ext = &rest[blank..];
        let visible = |b: &u8| matches!(b, b' ' | b'\t' | 0x21..=0x7e | 0x80..=0xff);
        if ext.first() != Some(&b';') || !ext.iter().all(visible) {
            return None;
        }
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = (*d as char).to_digit(16)?;
        Some((n << 4) | u64::from(v))
    })
}

/// A complete CRLF-terminated line from the buffer, without the CRLF. A
/// bare LF is an error, not a line end.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(at) if at == 0 || buf[at - 1] != b'\r' => Err(invalid("bare LF in chunked framing")),
        Some(at) => {
            let line = buf.split_to(at - 1).freeze();
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
///
/// The buffer grows (by 16 KiB) only when less than 256 bytes are left,
/// so a keep-alive connection waiting for its next small request does not
/// grow its buffer for it, while a streaming body is read in large pieces.
pub fn poll_fill<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 256 {
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

    /// Decodes `input` delivered in two reads split at `at`, as a
    /// connection might deliver it; the result must not depend on `at`.
    fn decode_split(d: Decoder, input: &[u8], at: usize) -> Result<Vec<u8>, String> {
        let mut d = d;
        let mut buf = BytesMut::from(&input[..at]);
        let mut rest = Some(&input[at..]);
        let mut out = Vec::new();
        loop {
            match d
                .decode(&mut buf, rest.is_none())
                .map_err(|e| e.to_string())?
            {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End => return Ok(out),
                Decoded::NeedMore => match rest.take() {
                    Some(r) => buf.extend_from_slice(r),
                    None => return Err("needs more after the end of input".into()),
                },
            }
        }
    }

    #[test]
    fn bodies_decode_the_same_at_every_split() {
        /// Framing, input, and the body or a part of the error.
        type Case = (Decoder, &'static [u8], Result<&'static [u8], &'static str>);
        let cases: &[Case] = &[
            (Decoder::Length(5), b"hello", Ok(b"hello")),
            (
                Decoder::ChunkSize,
                b"5\r\nhello\r\nA;x=\"y\"\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
                Ok(b"hello0123456789"),
            ),
            (Decoder::ChunkSize, b"0\r\n\r\n", Ok(b"")),
            (
                Decoder::ChunkSize,
                b"5 ;ext\r\nhello\r\n0\r\n\r\n",
                Ok(b"hello"),
            ),
            (Decoder::ChunkSize, b"5\nhello\r\n0\r\n\r\n", Err("bare LF")),
            (Decoder::ChunkSize, b"5\r\nhello\n0\r\n\r\n", Err("CRLF")),
            (
                Decoder::ChunkSize,
                b"+5\r\nhello\r\n0\r\n\r\n",
                Err("chunk size"),
            ),
            (
                Decoder::ChunkSize,
                b" 5\r\nhello\r\n0\r\n\r\n",
                Err("chunk size"),
            ),
            (
                Decoder::ChunkSize,
                b"5 \r\nhello\r\n0\r\n\r\n",
                Err("chunk size"),
            ),
            (
                Decoder::ChunkSize,
                b"0x5\r\nhello\r\n0\r\n\r\n",
                Err("chunk size"),
            ),
            (
                Decoder::ChunkSize,
                b"\r\nhello\r\n0\r\n\r\n",
                Err("chunk size"),
            ),
            (
                Decoder::ChunkSize,
                b"10000000000000000\r\n",
                Err("chunk size"),
            ),
            (
                Decoder::ChunkSize,
                b"5\rx\r\nhello\r\n0\r\n\r\n",
                Err("chunk size"),
            ),
            (Decoder::ChunkSize, b"0\r\nno colon\r\n\r\n", Err("trailer")),
            (Decoder::ChunkSize, b"5\r\nhel", Err("mid-body")),
        ];
        for (decoder, input, expected) in cases {
            for at in 0..=input.len() {
                let got = decode_split(*decoder, input, at);
                let shown = String::from_utf8_lossy(input);
                match (expected, &got) {
                    (Ok(want), Ok(body)) => assert_eq!(body, want, "{shown:?} split at {at}"),
                    (Err(why), Err(e)) => assert!(e.contains(why), "{shown:?} at {at}: {e}"),
                    _ => panic!("{shown:?} split at {at}: expected {expected:?}, got {got:?}"),
                }
            }
        }
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
