//! HTTP/1.1 wire format towards backends: encoding a request head from
//! borrowed parts, and parsing a response head with body framing decided as
//! RFC 9112 §6.3 says.

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

/// Appends `METHOD path HTTP/1.1`, the headers and the blank line.
pub fn encode_request_head(parts: &request::Parts, framing: RequestFraming, out: &mut Vec<u8>) {
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
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == RequestFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses a complete response head off the front of `buf`. `Ok(None)`: more
/// bytes are needed. Interim (1xx) responses are consumed and skipped.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, ParseError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
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
        // Offsets into the head, kept on the stack, so that the names and
        // values can point into one shared, frozen copy of the head.
        let base = buf.as_ptr() as usize;
        let count = resp.headers.len();
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
            let at = |p: *const u8| (p as usize - base) as u32;
            *span = (
                at(h.name.as_ptr()),
                h.name.len() as u32,
                at(h.value.as_ptr()),
                h.value.len() as u32,
            );
        }
        let head: Bytes = buf.split_to(len).freeze();
        let mut map = HeaderMap::with_capacity(count);
        for &(name_at, name_len, value_at, value_len) in &spans[..count] {
            let name = &head[name_at as usize..(name_at + name_len) as usize];
            let name = HeaderName::from_bytes(name)
                .map_err(|_| ParseError::Invalid("bad header name".into()))?;
            let value = HeaderValue::from_maybe_shared(
                head.slice(value_at as usize..(value_at + value_len) as usize),
            )
            .map_err(|_| ParseError::Invalid(format!("bad value of header {name}")))?;
            map.append(name, value);
        }

        let mut keep_alive = match version {
            Version::HTTP_10 => has_token(&map, &header::CONNECTION, "keep-alive"),
            _ => !has_token(&map, &header::CONNECTION, "close"),
        };
        let no_body = *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::SWITCHING_PROTOCOLS;
        let framing = if no_body {
            Framing::Empty
        } else if map.contains_key(header::TRANSFER_ENCODING) {
            let chunked_last = map
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
            if chunked_last {
                // A length next to chunked coding is ignored (RFC 9112 §6.3).
                map.remove(header::CONTENT_LENGTH);
                Framing::Chunked
            } else {
                keep_alive = false;
                Framing::UntilClose
            }
        } else if let Some(n) = content_length(&map)? {
            Framing::Length(n)
        } else {
            keep_alive = false;
            Framing::UntilClose
        };

        let mut parts = response::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = map;
        return Ok(Some(ResponseHead {
            parts,
            framing,
            keep_alive,
        }));
    }
}

/// The `Content-Length`, refusing differing or malformed values.
fn content_length(map: &HeaderMap) -> Result<Option<u64>, ParseError> {
    let mut found: Option<u64> = None;
    for v in map.get_all(header::CONTENT_LENGTH) {
        for part in v
            .to_str()
            .map_err(|_| ParseError::Invalid("bad content-length".into()))?
            .split(',')
        {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| ParseError::Invalid("bad content-length".into()))?;
            if found.is_some_and(|f| f != n) {
                return Err(ParseError::Invalid(
                    "conflicting content-length values".into(),
                ));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, method: Method) -> Result<Option<ResponseHead>, ParseError> {
        parse_response_head(&mut BytesMut::from(raw), &method)
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
        encode_request_head(&parts, RequestFraming::AsDeclared, &mut out);
        assert_eq!(out, b"GET /a/b?c=1 HTTP/1.1\r\nhost: example.com\r\n\r\n");
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
        let h = parse_response_head(&mut buf, &Method::POST)
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
