//! Responses from backends: parsing a head, with its body framing decided
//! by the rules in [`super::rules`] (RFC 9112 §6.3), the same rules that
//! frame client requests.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Version, response};

use super::head::{Managed, Spans, header_map};
use super::rules::{Codings, ConnectionTokens, content_length};

/// Most header lines a backend response may have.
pub const MAX_HEADERS: usize = 128;
/// Largest response head accepted from a backend.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection (which then is not reused).
    UntilClose,
}

/// A backend's response head. Its header map holds neither
/// `Content-Length` nor `Transfer-Encoding` as the backend wrote them: the
/// framing is in `framing`, and a bodiless answer to HEAD or a 304 carries
/// its length re-rendered from the parsed number.
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

fn invalid(why: impl std::fmt::Display) -> ParseError {
    ParseError::Invalid(why.to_string())
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
            Err(e) => return Err(invalid(e)),
        };
        if len > MAX_HEAD_BYTES {
            return Err(ParseError::TooLarge);
        }
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| invalid(format!("status {code}")))?;
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

/// A response's framing decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decision {
    framing: Framing,
    keep_alive: bool,
    /// The parsed `Content-Length`, when one was sent and not overridden.
    length: Option<u64>,
}

/// Body framing and connection reuse as RFC 9112 §6.3 and §9.3 decide
/// them, with the shared rules: one `Content-Length` of digits only; no
/// coding but `chunked`; no `Transfer-Encoding` in HTTP/1.0 (§6.1: faulty
/// framing). A length next to `chunked` is ignored, and the connection is
/// not reused after such a response (it may be a smuggling attempt).
fn framing_of<'h>(
    version: Version,
    status: StatusCode,
    method: &Method,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<Decision, ParseError> {
    let (mut connection, mut codings, mut length) =
        (ConnectionTokens::default(), Codings::default(), None);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"connection") {
            connection.add(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.add(value).map_err(invalid)?;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(invalid("more than one content-length"));
            }
            length = Some(content_length(value).map_err(invalid)?);
        }
    }
    if codings.present && version == Version::HTTP_10 {
        return Err(invalid("transfer-encoding in an HTTP/1.0 response"));
    }
    let mut keep_alive = connection.persistent(version == Version::HTTP_10);
    let no_body = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS;
    let framing = if no_body {
        Framing::Empty
    } else if codings.chunked {
        if length.take().is_some() {
            keep_alive = false;
        }
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Decision {
        framing,
        keep_alive,
        length,
    })
}

/// Parses a complete response head off the front of `buf`. `Ok(None)`: more
/// bytes are needed. Interim (1xx) responses are consumed and skipped.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, ParseError> {
    let mut spans = Spans::<MAX_HEADERS>::new();
    let parsed = parse_head(buf, |raw| {
        spans.record(raw.headers, raw.base);
        let iter = raw.headers.iter().map(|h| (h.name.as_bytes(), h.value));
        let decision = framing_of(raw.version, raw.status, method, iter)?;
        Ok((raw.status, raw.version, decision))
    })?;
    let Some(((status, version, decision), head)) = parsed else {
        return Ok(None);
    };
    // Room for the `Via` the proxy adds, so that adding it does not regrow.
    let mut map = header_map(&head, spans.as_slice(), Managed::Framing, 2).map_err(invalid)?;
    // A bodiless answer still says how long the body would have been.
    if decision.framing == Framing::Empty
        && (*method == Method::HEAD || status == StatusCode::NOT_MODIFIED)
        && let Some(n) = decision.length
    {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let mut parts = response::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = map;
    Ok(Some(ResponseHead {
        parts,
        framing: decision.framing,
        keep_alive: decision.keep_alive,
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
        let decision = framing_of(raw.version, raw.status, method, iter)?;
        let captured = capture.and_then(|name| {
            raw.headers
                .iter()
                .rfind(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_string)
        });
        Ok(LeanHead {
            status: raw.status.as_u16(),
            framing: decision.framing,
            keep_alive: decision.keep_alive,
            captured,
        })
    })?;
    Ok(parsed.map(|(head, _)| head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, method: Method) -> Result<Option<ResponseHead>, ParseError> {
        parse_response_head(&mut BytesMut::from(raw), &method)
    }

    /// A head that must parse whole.
    fn head(raw: &str, method: Method) -> ResponseHead {
        match parse(raw, method) {
            Ok(Some(h)) => h,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn the_lean_parser_frames_exactly_as_the_full_one() {
        let heads = [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n",
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
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            Method::GET,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.parts.headers.contains_key("content-length"));
        assert!(!h.parts.headers.contains_key("transfer-encoding"));
        assert!(!h.keep_alive, "a length beside chunked: not reused");
        let h = head("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD);
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(
            h.parts.headers["content-length"], "5",
            "HEAD keeps its length"
        );
        let h = head(
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 005\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(
            h.parts.headers["content-length"], "5",
            "re-rendered, not copied"
        );
        let h = head(
            "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
            Method::GET,
        );
        assert!(!h.parts.headers.contains_key("content-length"));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET);
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked to keep alive");
        let h = head(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(!h.keep_alive);
    }

    #[test]
    fn heads_parse_the_same_at_every_split() {
        let raws = [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        ];
        for raw in raws {
            let whole = parse(raw, Method::GET).map(|h| h.map(|h| (h.framing, h.keep_alive)));
            for at in 0..raw.len() {
                let mut buf = BytesMut::from(&raw.as_bytes()[..at]);
                let got = match parse_response_head(&mut buf, &Method::GET) {
                    Ok(None) => {
                        buf.extend_from_slice(&raw.as_bytes()[at..]);
                        parse_response_head(&mut buf, &Method::GET)
                    }
                    other => other,
                };
                let got = got.map(|h| h.map(|h| (h.framing, h.keep_alive)));
                assert_eq!(got, whole, "{raw:?} split at {at}");
            }
        }
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

    /// Backends are held to the same framing rules as clients.
    #[test]
    fn bad_heads_are_refused() {
        let refused = [
            (
                "content-length: 1\r\ncontent-length: 2",
                "more than one content-length",
            ),
            (
                "content-length: 1\r\ncontent-length: 1",
                "more than one content-length",
            ),
            ("content-length: -1", "invalid content-length"),
            ("content-length: +1", "invalid content-length"),
            ("content-length: 1,1", "invalid content-length"),
            (
                "transfer-encoding: gzip, chunked",
                "unsupported transfer-coding",
            ),
            ("transfer-encoding: gzip", "unsupported transfer-coding"),
            (
                "transfer-encoding: chunked, chunked",
                "chunked applied more than once",
            ),
        ];
        for (header, why) in refused {
            let raw = format!("HTTP/1.1 200 OK\r\n{header}\r\n\r\n");
            match parse(&raw, Method::GET) {
                Err(ParseError::Invalid(e)) => assert_eq!(e, why, "{raw:?}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        let te_in_10 = "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse(te_in_10, Method::GET).is_err());
        assert!(parse("garbage\r\n\r\n", Method::GET).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(parse(&huge, Method::GET).unwrap_err(), ParseError::TooLarge);
    }
}
