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
//!
//! Trailers (the fields after the last chunk) are parsed, held to the same
//! field grammar as a head, and handed on as a trailers frame; fields that
//! must not be trailers (RFC 9110 §6.5.1: framing, routing, connection
//! control, content metadata, authentication) are dropped.

use std::io;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::SizeHint;
use tokio::io::AsyncRead;

use super::BoxError;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;
/// Most trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 64;
/// Most hex digits of a chunk size: 16 fill a `u64`.
const MAX_SIZE_DIGITS: usize = 16;

/// Where a body decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    /// After the last chunk: the trailer section, then the end.
    Trailers,
    UntilClose,
    Done,
}

/// One step of decoding.
#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    /// The trailer fields; the body is complete.
    Trailers(http::HeaderMap),
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
                Decoder::Trailers => {
                    let Some(section) = trailer_section(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    *self = Decoder::Done;
                    if section.is_empty() {
                        return Ok(Decoded::End);
                    }
                    return Ok(Decoded::Trailers(parse_trailers(&section)?));
                }
                Decoder::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line).ok_or_else(|| invalid("invalid chunk size"))?;
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

/// The trailer section after the last chunk, once all of it is buffered:
/// empty for none (a bare CRLF), else the field lines with their CRLFs and
/// the blank line. A bare LF anywhere in it is refused.
fn trailer_section(buf: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
    let end = if buf.starts_with(b"\r\n") {
        Some(2)
    } else {
        buf.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
    };
    let seen = end.unwrap_or(buf.len());
    let bare_lf = buf[..seen]
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || buf[i - 1] != b'\r'));
    if bare_lf {
        return Err(invalid("bare LF in chunked framing"));
    }
    match end {
        Some(2) => {
            buf.advance(2);
            Ok(Some(Bytes::new()))
        }
        Some(n) => Ok(Some(buf.split_to(n).freeze())),
        None if buf.len() > MAX_TRAILERS => Err(invalid("trailer section too large")),
        None => Ok(None),
    }
}

/// Whether a field may travel as a trailer (RFC 9110 §6.5.1): not one
/// that frames, routes, controls the connection, describes the content or
/// authenticates.
pub fn allowed_in_trailers(name: &http::HeaderName) -> bool {
    use http::header::*;
    !matches!(
        *name,
        CONTENT_LENGTH
            | TRANSFER_ENCODING
            | HOST
            | CONNECTION
            | TE
            | TRAILER
            | UPGRADE
            | CONTENT_ENCODING
            | CONTENT_TYPE
            | CONTENT_RANGE
            | AUTHORIZATION
            | PROXY_AUTHORIZATION
            | SET_COOKIE
            | CACHE_CONTROL
            | EXPECT
            | RANGE
    ) && name.as_str() != "keep-alive"
        && name.as_str() != "proxy-connection"
}

/// The fields of a trailer section, by the head's field grammar.
fn parse_trailers(section: &[u8]) -> Result<http::HeaderMap, BoxError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let (_, parsed) = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) | Err(_) => return Err(invalid("invalid trailer section")),
    };
    let mut map = http::HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name = http::HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| invalid("invalid trailer name"))?;
        let value = http::HeaderValue::from_bytes(field.value)
            .map_err(|_| invalid("invalid trailer value"))?;
        if allowed_in_trailers(&name) {
            map.append(name, value);
        }
    }
    Ok(map)
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
) -> Poll<Result<Option<http_body::Frame<Bytes>>, BoxError>> {
    let mut eof = false;
    loop {
        match decoder.decode(buf, eof)? {
            Decoded::Data(data) => return Poll::Ready(Ok(Some(http_body::Frame::data(data)))),
            Decoded::Trailers(map) => {
                return Poll::Ready(Ok(Some(http_body::Frame::trailers(map))));
            }
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
        Poll::Ready(next.transpose())
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
                Decoded::End | Decoded::Trailers(_) => return Ok(out),
                Decoded::NeedMore => unreachable!("eof given"),
            }
        }
    }

    #[test]
    fn trailers_are_parsed_and_fields_that_must_not_trail_are_dropped() {
        let mut d = Decoder::ChunkSize;
        let mut buf = BytesMut::from(
            &b"2\r\nhi\r\n0\r\ngrpc-status: 0\r\ncontent-length: 9\r\nx-sum: abc\r\n\r\nNEXT"[..],
        );
        assert!(matches!(d.decode(&mut buf, false), Ok(Decoded::Data(_))));
        let Ok(Decoded::Trailers(map)) = d.decode(&mut buf, false) else {
            panic!("trailers expected");
        };
        assert_eq!(map.len(), 2);
        assert_eq!(map["grpc-status"], "0");
        assert_eq!(map["x-sum"], "abc");
        assert_eq!(&buf[..], b"NEXT", "the next message is left in place");
        assert!(matches!(d.decode(&mut buf, false), Ok(Decoded::End)));

        for bad in [
            &b"0\r\nx: 1\n\r\n"[..],
            b"0\r\nbad name: 1\r\n\r\n",
            b"0\r\n folded: 1\r\n\r\n",
        ] {
            let mut d = Decoder::ChunkSize;
            let mut buf = BytesMut::from(bad);
            assert!(
                d.decode(&mut buf, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // No trailers: CRLF right after the last chunk.
        let mut d = Decoder::ChunkSize;
        let mut buf = BytesMut::from(&b"0\r\n\r\n"[..]);
        assert!(matches!(d.decode(&mut buf, false), Ok(Decoded::End)));
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
                Decoded::End | Decoded::Trailers(_) => return Ok(out),
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
