//! HTTP/1.1 wire format towards backends: encoding a request head from
//! borrowed parts, and parsing a response head with body framing decided as
//! RFC 9112 §6.3 says.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, request, response};

/// Most header lines a backend response may have.
pub const MAX_HEADERS: usize = 128;
/// Largest response head accepted from a backend.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How a request body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body (or the request's own `Content-Length` says how much).
    AsDeclared,
    /// Unknown length: chunked transfer coding.
    Chunked,
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection (which then is not reused).
    UntilClose,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub parts: response::Parts,
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("invalid response head: {0}")]
    Invalid(String),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
}

/// Appends `METHOD path HTTP/1.1`, the headers, the proxy's `added` lines
/// (which replace the client's `X-Forwarded-*` when present) and the blank
/// line.
pub fn encode_request_head(
    parts: &request::Parts,
    added: &[u8],
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if framing == RequestFraming::Chunked && name == header::CONTENT_LENGTH {
            continue;
        }
        if !added.is_empty() && crate::proxy::headers::replaced_by_proxy(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == RequestFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(added);
    out.extend_from_slice(b"\r\n");
}

/// What a response head parser sees of one final (non-1xx) head.
struct RawHead<'a, 'b> {
    status: StatusCode,
    version: Version,
    headers: &'a [httparse::Header<'b>],
    /// Address of the head's first byte, to turn header slices into offsets.
    base: usize,
}

/// Parses a complete head off the front of `buf`, skipping interim (1xx)
/// responses, lets `read` take what it needs from it, then consumes it and
/// returns it frozen. `Ok(None)`: more bytes are needed.
fn parse_head<T>(
    buf: &mut BytesMut,
    mut read: impl FnMut(RawHead<'_, '_>) -> Result<T, ParseError>,
) -> Result<Option<(T, Bytes)>, ParseError> {
    loop {
        // Uninitialised header slots: initialising 128 of them per response
        // costs more than parsing a typical head.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(ParseError::TooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ParseError::Invalid(e.to_string())),
        };
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| ParseError::Invalid(format!("status {code}")))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            let _ = buf.split_to(len);
            continue;
        }
        let version = if resp.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let out = read(RawHead {
            status,
            version,
            headers: resp.headers,
            base: buf.as_ptr() as usize,
        })?;
        return Ok(Some((out, buf.split_to(len).freeze())));
    }
}

/// Where one header's name and value sit in a head: offsets and lengths.
/// Kept on the stack while parsing, so that the names and values can then
/// point into one shared, frozen copy of the head.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    name_at: u32,
    name_len: u32,
    value_at: u32,
    value_len: u32,
}

/// Records the spans of `headers`, parsed from a head starting at `base`,
/// into `spans` (cleared first; kept by the connection across requests).
pub fn record_spans(headers: &[httparse::Header<'_>], base: usize, spans: &mut Vec<Span>) {
    spans.clear();
    spans.extend(headers.iter().map(|h| {
        let at = |p: *const u8| (p as usize - base) as u32;
        Span {
            name_at: at(h.name.as_ptr()),
            name_len: h.name.len() as u32,
            value_at: at(h.value.as_ptr()),
            value_len: h.value.len() as u32,
        }
    }));
}

/// The header map of a frozen head, its values sharing the head's bytes,
/// with room for `extra` more entries.
pub fn header_map(head: &Bytes, spans: &[Span], extra: usize) -> Result<HeaderMap, ParseError> {
    let mut map = HeaderMap::with_capacity(spans.len() + extra);
    for s in spans {
        let name = &head[s.name_at as usize..(s.name_at + s.name_len) as usize];
        let name = HeaderName::from_bytes(name)
            .map_err(|_| ParseError::Invalid("bad header name".into()))?;
        let value = HeaderValue::from_maybe_shared(
            head.slice(s.value_at as usize..(s.value_at + s.value_len) as usize),
        )
        .map_err(|_| ParseError::Invalid(format!("bad value of header {name}")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Parses a complete response head off the front of `buf`. `Ok(None)`: more
/// bytes are needed. Interim (1xx) responses are consumed and skipped.
/// `spans` is scratch space.
pub fn parse_response_head(
    buf: &mut BytesMut,
    spans: &mut Vec<Span>,
    method: &Method,
) -> Result<Option<ResponseHead>, ParseError> {
    let parsed = parse_head(buf, |raw| {
        record_spans(raw.headers, raw.base, spans);
        let iter = raw.headers.iter().map(|h| (h.name.as_bytes(), h.value));
        let framing = framing_of(raw.version, raw.status, method, iter)?;
        Ok((raw.status, raw.version, raw.headers.len(), framing))
    })?;
    let Some(((status, version, _, (framing, keep_alive, ignore_length)), head)) = parsed else {
        return Ok(None);
    };
    // Room for the `Via` the proxy adds, so that adding it does not regrow.
    let mut map = header_map(&head, spans, 1)?;
    if ignore_length {
        // A length next to chunked coding is ignored (RFC 9112 §6.3).
        map.remove(header::CONTENT_LENGTH);
    }
    let mut parts = response::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = map;
    Ok(Some(ResponseHead {
        parts,
        framing,
        keep_alive,
    }))
}

/// A response head reduced to what a load generator needs: no header map.
#[derive(Debug)]
pub struct LeanHead {
    pub status: u16,
    pub framing: Framing,
    pub keep_alive: bool,
    /// The value of the header asked for, if present.
    pub captured: Option<String>,
}

/// Parses a complete response head off the front of `buf` without building
/// a header map; `capture` names a header whose value to keep. Framing and
/// keep-alive follow the same rules as [`parse_response_head`].
pub fn parse_response_lean(
    buf: &mut BytesMut,
    method: &Method,
    capture: Option<&str>,
) -> Result<Option<LeanHead>, ParseError> {
    let parsed = parse_head(buf, |raw| {
        let iter = raw.headers.iter().map(|h| (h.name.as_bytes(), h.value));
        let (framing, keep_alive, _) = framing_of(raw.version, raw.status, method, iter)?;
        let captured = capture.and_then(|name| {
            raw.headers
                .iter()
                .rfind(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_string)
        });
        Ok(LeanHead {
            status: raw.status.as_u16(),
            framing,
            keep_alive,
            captured,
        })
    })?;
    Ok(parsed.map(|(head, _)| head))
}

pub fn lists_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Body framing and connection reuse as RFC 9112 §6.3 and §9.3 decide them:
/// `(framing, keep_alive, ignore_content_length)`.
fn framing_of<'h>(
    version: Version,
    status: StatusCode,
    method: &Method,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(Framing, bool, bool), ParseError> {
    let (mut close, mut keep, mut last_te, mut length) = (false, false, None, None);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"connection") {
            close |= lists_token(value, "close");
            keep |= lists_token(value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            last_te = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let text = std::str::from_utf8(value)
                .map_err(|_| ParseError::Invalid("bad content-length".into()))?;
            for part in text.split(',') {
                let n: u64 = part
                    .trim()
                    .parse()
                    .map_err(|_| ParseError::Invalid("bad content-length".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(ParseError::Invalid(
                        "conflicting content-length values".into(),
                    ));
                }
                length = Some(n);
            }
        }
    }
    let mut keep_alive = match version {
        Version::HTTP_10 => keep,
        _ => !close,
    };
    let no_body = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS;
    let framing = if no_body {
        Framing::Empty
    } else if let Some(te) = last_te {
        let chunked_last = std::str::from_utf8(te)
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        if chunked_last {
            return Ok((Framing::Chunked, keep_alive, length.is_some()));
        }
        keep_alive = false;
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok((framing, keep_alive, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, method: Method) -> Result<Option<ResponseHead>, ParseError> {
        parse_response_head(&mut BytesMut::from(raw), &mut Vec::new(), &method)
    }

    #[test]
    fn encodes_origin_form_with_headers() {
        let mut req = http::Request::get("http://example.com/a/b?c=1")
            .body(())
            .unwrap();
        req.headers_mut()
            .insert("host", HeaderValue::from_static("example.com"));
        let (parts, _) = req.into_parts();
        let mut out = Vec::new();
        encode_request_head(&parts, b"", RequestFraming::AsDeclared, &mut out);
        assert_eq!(out, b"GET /a/b?c=1 HTTP/1.1\r\nhost: example.com\r\n\r\n");
    }

    #[test]
    fn the_lean_parser_frames_exactly_as_the_full_one() {
        let heads = [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
            "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nlocation: /items/7\r\ncontent-length: 0\r\n\r\n",
        ];
        for raw in heads {
            for method in [Method::GET, Method::HEAD] {
                let full = parse(raw, method.clone()).unwrap().unwrap();
                let lean = parse_response_lean(&mut BytesMut::from(raw), &method, Some("Location"))
                    .unwrap()
                    .unwrap();
                assert_eq!(lean.status, full.parts.status.as_u16(), "{raw}");
                assert_eq!(
                    (lean.framing, lean.keep_alive),
                    (full.framing, full.keep_alive),
                    "{raw}"
                );
                let location = full
                    .parts
                    .headers
                    .get("location")
                    .map(|v| v.to_str().unwrap());
                assert_eq!(lean.captured.as_deref(), location, "{raw}");
            }
        }
        let conflicting = "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n";
        assert!(parse_response_lean(&mut BytesMut::from(conflicting), &Method::GET, None).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = parse(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = parse(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.parts.headers.contains_key("content-length"));
        let h = parse("HTTP/1.1 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = parse(
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = parse("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked to keep alive");
        let h = parse(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
        );
        let h = parse_response_head(&mut buf, &mut Vec::new(), &Method::POST)
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.status, 201);
        assert!(buf.is_empty());
        assert!(
            parse("HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_heads_are_refused() {
        assert!(
            parse(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                Method::GET
            )
            .is_err()
        );
        assert!(parse("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", Method::GET).is_err());
        assert!(parse("garbage\r\n\r\n", Method::GET).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(parse(&huge, Method::GET).unwrap_err(), ParseError::TooLarge);
    }
}
