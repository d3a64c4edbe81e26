//! Requests from clients: parsing a head into the one normalized form that
//! everything downstream reads.
//!
//! The normalized head's target is always absolute: `scheme://authority`
//! followed by the path and query. The authority is decided once, as RFC
//! 9112 §3.2.2 says: an absolute-form target's authority wins over `Host`
//! (which must still be present and valid); otherwise `Host`; an HTTP/1.0
//! request without `Host` gets the address the client connected to.
//! Routing, the cache key, hash keys, the forwarded headers and the `Host`
//! sent upstream all read `uri.authority()`, so no two of them can
//! disagree about which host a request is for.
//!
//! The header map handed on holds no `Host`, `Content-Length` or
//! `Transfer-Encoding`: the first is in the target, the framing is in
//! [`RequestHead::body`], and encoders write both from there.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version, request};

use super::body::Decoder;
use super::head::{Managed, Spans, header_map};
use super::rules::{
    Codings, ConnectionTokens, Refusal, content_length, lists_token, normalize_authority,
};

/// Most header lines a request may have.
pub const MAX_HEADERS: usize = 100;

/// What a connection's requests are read against.
#[derive(Clone, Debug)]
pub struct Origin {
    /// `http` (or `https` behind TLS): the scheme of normalized targets.
    pub scheme: Scheme,
    pub default_port: u16,
    /// The address the client connected to: the authority of requests that
    /// name none (HTTP/1.0 without `Host`).
    pub local: std::net::SocketAddr,
}

impl Origin {
    pub fn http(local: std::net::SocketAddr) -> Self {
        Origin {
            scheme: Scheme::HTTP,
            default_port: 80,
            local,
        }
    }

    pub fn https(local: std::net::SocketAddr) -> Self {
        Origin {
            scheme: Scheme::HTTPS,
            default_port: 443,
            local,
        }
    }

    fn local_authority(&self) -> Authority {
        Authority::try_from(self.local.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("localhost"))
    }
}

/// A request head as the wire layer decided it.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, normalized absolute target, version, and the headers but
    /// `Host`, `Content-Length` and `Transfer-Encoding`.
    pub parts: request::Parts,
    /// How the body is framed; `None`: there is none.
    pub body: Option<Decoder>,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade` with an
    /// `Upgrade` header, HTTP/1.1, no body): see `super::tunnel`.
    pub upgrade: bool,
    /// `TE` lists `trailers`: a chunked response may end with trailers.
    pub trailers: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// More header lines or bytes than allowed: 431.
    TooLarge,
    Refused(Refusal),
}

impl From<Refusal> for RequestError {
    fn from(r: Refusal) -> Self {
        RequestError::Refused(r)
    }
}

fn bad(reason: &'static str) -> RequestError {
    RequestError::Refused(Refusal::bad(reason))
}

/// The last valid `Host` a connection sent, as an authority of its own
/// (not sharing a head's buffer). Keep-alive clients send the same `Host`
/// on every request: it is checked and parsed once per connection.
#[derive(Clone, Debug, Default)]
pub struct KnownHost(Option<Authority>);

impl KnownHost {
    fn is(&self, value: &[u8]) -> bool {
        self.0
            .as_ref()
            .is_some_and(|a| a.as_str().as_bytes() == value)
    }

    fn authority(&self) -> Result<Authority, RequestError> {
        self.0.clone().ok_or(bad("invalid host"))
    }
}

/// A request's `Host`, checked.
enum Host {
    /// The same as the connection's last one.
    Known,
    /// Valid and already in normal form.
    Normal(Bytes),
    /// Valid once normalized (lower-cased, default port dropped, …).
    Normalized(String),
}

/// Parses a complete request head off the front of `buf`; `Ok(None)`: more
/// bytes are needed. `known` is the connection's last `Host`.
pub fn parse_request(
    buf: &mut BytesMut,
    origin: &Origin,
    known: &mut KnownHost,
) -> Result<Option<RequestHead>, RequestError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooLarge),
        Err(httparse::Error::Version) => {
            return Err(RequestError::Refused(Refusal {
                status: http::StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                reason: "unsupported HTTP version",
            }));
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    let base = buf.as_ptr() as usize;
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("bad method"))?;
    if method == Method::CONNECT {
        return Err(Refusal::not_implemented("CONNECT is not served").into());
    }
    let target = req.path.unwrap_or_default();
    let target_at = target.as_ptr() as usize - base;
    let target_range = target_at..target_at + target.len();
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut spans = Spans::<MAX_HEADERS>::new();
    spans.record(req.headers, base);
    let mut connection = ConnectionTokens::default();
    let mut codings = Codings::default();
    let (mut length, mut expect, mut upgrade, mut trailers) = (None, false, false, false);
    let mut host: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return Err(bad("more than one host"));
            }
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection.add(h.value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.add(h.value)?;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(bad("more than one content-length"));
            }
            length = Some(content_length(h.value)?);
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect = lists_token(h.value, "100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = !h.value.trim_ascii().is_empty();
        } else if name.eq_ignore_ascii_case(b"te") {
            trailers |= lists_token(h.value, "trailers");
        }
    }
    let body = match (codings.present, length) {
        (true, _) if version == Version::HTTP_10 => {
            return Err(bad("transfer-encoding in HTTP/1.0"));
        }
        (true, Some(_)) => return Err(bad("both transfer-encoding and content-length")),
        (true, None) => Some(Decoder::ChunkSize),
        (false, Some(0) | None) => None,
        (false, Some(n)) => Some(Decoder::Length(n)),
    };
    // The host, checked; a keep-alive client's usual one only once.
    let host = match host {
        Some(value) if known.is(value) => Some(Host::Known),
        Some(value) => match normalize_authority(value, origin.default_port)? {
            Some(normalized) => Some(Host::Normalized(normalized)),
            None => Some(Host::Normal(Bytes::copy_from_slice(value))),
        },
        None if version == Version::HTTP_11 => return Err(bad("missing host")),
        None => None,
    };
    let head = buf.split_to(len).freeze();
    let (scheme, target_authority, path) = split_target(&head, target_range, origin)?;
    let authority = match (target_authority, host) {
        (Some(a), _) => a,
        (None, Some(Host::Known)) => known.authority()?,
        (None, Some(Host::Normal(value))) => {
            let a = Authority::from_maybe_shared(value).map_err(|_| bad("invalid host"))?;
            known.0 = Some(a.clone());
            a
        }
        (None, Some(Host::Normalized(normalized))) => {
            Authority::try_from(normalized).map_err(|_| bad("invalid host"))?
        }
        (None, None) => origin.local_authority(),
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    uri.path_and_query = Some(path);
    let uri = Uri::from_parts(uri).map_err(|_| bad("invalid request target"))?;
    // No spare room: the forwarded headers are appended by the encoder.
    let headers = header_map(&head, spans.as_slice(), Managed::FramingAndHost, 0).map_err(bad)?;
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        body,
        keep_alive: connection.persistent(version == Version::HTTP_10),
        expect_continue: expect && version == Version::HTTP_11,
        upgrade: upgrade && connection.upgrade && version == Version::HTTP_11 && body.is_none(),
        trailers,
    }))
}

/// The scheme, the authority (absolute-form only) and the path of a
/// request target (RFC 9112 §3.2). Origin-form (`/path?q`) and absolute-form
/// (`http://host/path?q`) are served; asterisk-form, authority-form,
/// fragments and userinfo are refused.
fn split_target(
    head: &Bytes,
    range: std::ops::Range<usize>,
    origin: &Origin,
) -> Result<(Scheme, Option<Authority>, PathAndQuery), RequestError> {
    let raw = &head[range.clone()];
    if raw.contains(&b'#') {
        return Err(bad("fragment in the request target"));
    }
    if raw.first() == Some(&b'/') {
        let path = PathAndQuery::from_maybe_shared(head.slice(range))
            .map_err(|_| bad("invalid request target"))?;
        return Ok((origin.scheme.clone(), None, path));
    }
    let lower = |n: usize| raw.get(..n).map(<[u8]>::to_ascii_lowercase);
    let scheme = if lower(7).as_deref() == Some(b"http://") {
        Scheme::HTTP
    } else if lower(8).as_deref() == Some(b"https://") {
        Scheme::HTTPS
    } else {
        return Err(bad("invalid request target"));
    };
    let uri =
        Uri::from_maybe_shared(head.slice(range)).map_err(|_| bad("invalid request target"))?;
    let parts = uri.into_parts();
    let authority = parts
        .authority
        .ok_or(bad("absolute target without a host"))?;
    let port = if scheme == Scheme::HTTPS { 443 } else { 80 };
    let authority = match normalize_authority(authority.as_str().as_bytes(), port)? {
        None => authority,
        Some(normal) => Authority::try_from(normal).map_err(|_| bad("invalid host"))?,
    };
    let path = match parts.path_and_query {
        Some(p) if !p.as_str().is_empty() => p,
        _ => PathAndQuery::from_static("/"),
    };
    // The connection's own scheme, whatever the client wrote: a client
    // cannot make the proxy think a request came over TLS.
    Ok((origin.scheme.clone(), Some(authority), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn origin() -> Origin {
        Origin::http("127.0.0.1:8080".parse().expect("address"))
    }

    fn parse(raw: &str) -> Result<Option<RequestHead>, RequestError> {
        parse_request(
            &mut BytesMut::from(raw),
            &origin(),
            &mut KnownHost::default(),
        )
    }

    fn head(raw: &str) -> RequestHead {
        match parse(raw) {
            Ok(Some(h)) => h,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    /// The status and reason a head is refused with, or "accepted".
    fn refusal(raw: &str) -> (u16, &'static str) {
        match parse(raw) {
            Err(RequestError::Refused(r)) => (r.status.as_u16(), r.reason),
            Err(RequestError::TooLarge) => (431, "too large"),
            Ok(Some(_)) => (200, "accepted"),
            Ok(None) => (0, "incomplete"),
        }
    }

    #[test]
    fn heads_are_normalized() {
        let h =
            head("POST /a?b=1 HTTP/1.1\r\nHost: X.example:80\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(h.parts.uri, "http://x.example/a?b=1");
        assert_eq!(h.body, Some(Decoder::Length(5)));
        assert!(h.keep_alive);
        assert!(h.parts.headers.is_empty(), "{:?}", h.parts.headers);
        let h = head("GET http://A.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(
            h.parts.uri, "http://a.example/x",
            "the target's authority wins"
        );
        let h = head("GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(h.parts.uri.path(), "/");
        let h = head("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.parts.uri, "http://127.0.0.1:8080/");
        assert!(!h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive && h.body.is_none());
        let h = head(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(h.body, Some(Decoder::ChunkSize));
        assert!(h.expect_continue);
        let h = head(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        );
        assert!(!h.keep_alive, "close on any Connection line wins");
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
    }

    #[test]
    fn a_connection_s_usual_host_is_checked_once_and_a_new_one_again() {
        let mut known = KnownHost::default();
        let mut parse = |raw: &str| {
            parse_request(&mut BytesMut::from(raw), &origin(), &mut known)
                .map(|h| h.map(|h| h.parts.uri.to_string()))
        };
        assert_eq!(
            parse("GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\n"),
            Ok(Some("http://a.example/1".into()))
        );
        assert_eq!(
            parse("GET /2 HTTP/1.1\r\nHost: a.example\r\n\r\n"),
            Ok(Some("http://a.example/2".into()))
        );
        assert_eq!(
            parse("GET /3 HTTP/1.1\r\nHost: B.example\r\n\r\n"),
            Ok(Some("http://b.example/3".into()))
        );
        assert!(matches!(
            parse("GET /4 HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Err(RequestError::Refused(_))
        ));
        assert_eq!(
            parse("GET /5 HTTP/1.1\r\nHost: a.example\r\n\r\n"),
            Ok(Some("http://a.example/5".into()))
        );
    }

    /// Each malformed input and the answer it gets; nginx answers each of
    /// these with the same status or is more lenient.
    pub(crate) const MALFORMED: &[(&str, u16, &str)] = &[
        ("GET / HTTP/1.1\r\n\r\n", 400, "missing host"),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "more than one host",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            400,
            "more than one host",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
            "invalid character in host",
        ),
        ("GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, "empty host"),
        (
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            400,
            "invalid character in host",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
            400,
            "invalid port in host",
        ),
        (
            "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            400,
            "userinfo in the authority",
        ),
        (
            "GET http://u:p@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "userinfo in the authority",
        ),
        ("GET http://a/ HTTP/1.1\r\n\r\n", 400, "missing host"),
        (
            "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "invalid request target",
        ),
        (
            "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "fragment in the request target",
        ),
        (
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "invalid request target",
        ),
        (
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            501,
            "CONNECT is not served",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            400,
            "invalid content-length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            400,
            "invalid content-length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\n",
            400,
            "invalid content-length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            400,
            "invalid content-length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            400,
            "more than one content-length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            400,
            "more than one content-length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            400,
            "both transfer-encoding and content-length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            "unsupported transfer-coding",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "unsupported transfer-coding",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            400,
            "chunked applied more than once",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "chunked applied more than once",
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "transfer-encoding in HTTP/1.0",
        ),
        (
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            400,
            "malformed request head",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            400,
            "malformed request head",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
            400,
            "malformed request head",
        ),
        (
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            505,
            "unsupported HTTP version",
        ),
        (
            "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "malformed request head",
        ),
    ];

    #[test]
    fn malformed_heads_get_the_status_nginx_gives_or_a_stricter_one() {
        for (raw, status, reason) in MALFORMED {
            assert_eq!(refusal(raw), (*status, *reason), "{raw:?}");
        }
    }

    #[test]
    fn heads_parse_the_same_at_every_split() {
        let accepted = [
            "GET /x HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            "GET http://a.example/x?y HTTP/1.1\r\nHost: b\r\n\r\n",
        ];
        for raw in accepted.iter().chain(MALFORMED.iter().map(|(r, _, _)| r)) {
            let whole = refusal(raw);
            for at in 0..raw.len() {
                let mut buf = BytesMut::from(&raw.as_bytes()[..at]);
                let mut known = KnownHost::default();
                let first = parse_request(&mut buf, &origin(), &mut known);
                let outcome = match first {
                    Ok(None) => {
                        buf.extend_from_slice(&raw.as_bytes()[at..]);
                        parse_request(&mut buf, &origin(), &mut known)
                    }
                    other => other,
                };
                let got = match outcome {
                    Err(RequestError::Refused(r)) => (r.status.as_u16(), r.reason),
                    Err(RequestError::TooLarge) => (431, "too large"),
                    Ok(Some(_)) => (200, "accepted"),
                    Ok(None) => (0, "incomplete"),
                };
                // A prefix may already be refused for a reason the whole
                // head also has; it must never be accepted early.
                assert!(
                    got == whole || (got.0 >= 400 && whole.0 >= 400),
                    "{raw:?} split at {at}: {got:?}, whole: {whole:?}"
                );
            }
        }
    }
}
