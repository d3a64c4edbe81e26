//! The HTTP/1.1 wire, both directions: head parsing, one framing decision,
//! body codecs, the server connection loop, the upstream client and its
//! pool. No proxy logic lives here.
//!
//! Switchyard speaks HTTP/1.1 with its own code for speed (see the README's
//! benchmark notes), so this module holds itself to hyper's and nginx's
//! strictness: the rules are in [`rules`] and shared by both directions,
//! every request comes out as one normalized head ([`request`]), and the
//! encoders write framing and `Host` from decisions made here, never from
//! the bytes a peer sent. HTTP/2 heads from hyper are normalized to the same
//! form by [`normalize_h2`].

pub mod body;
pub mod client;
pub mod encode;
mod head;
pub mod request;
pub mod response;
pub mod rules;
mod scratch;
pub mod server;
pub mod tunnel;

#[cfg(test)]
mod differential;

use bytes::Bytes;
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http_body_util::{BodyExt, Full};

pub use request::Origin;
pub use rules::Refusal;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every message the wire layer hands out or takes.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A short text body.
pub fn text_body(text: impl Into<Bytes>) -> BoxBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty_body() -> BoxBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The short text answer the proxy gives for a refused message, e.g.
/// `400 Bad Request: missing host`.
pub fn error_response(status: http::StatusCode, why: &str) -> http::Response<BoxBody> {
    let text = format!(
        "{} {}{}{why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        if why.is_empty() { "" } else { ": " }
    );
    let mut response = http::Response::new(text_body(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Brings an HTTP/2 request head (from hyper) to the normalized form the
/// HTTP/1.1 parser produces: the authority from `:authority` first, else
/// `Host`, checked by the same rules; a `Host` that names another authority
/// than `:authority` is refused (RFC 9113 §8.3.1); the target made absolute
/// on the connection's scheme; `Host`, `Content-Length` and
/// `Transfer-Encoding` taken out of the map (hyper has already checked the
/// length against the DATA frames and frames the body by it).
pub fn normalize_h2(parts: &mut Parts, origin: &Origin) -> Result<(), Refusal> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::bad("more than one host"));
    }
    let normal = |raw: &[u8]| -> Result<Authority, Refusal> {
        let fixed = rules::normalize_authority(raw, origin.default_port)?;
        let text = fixed.unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned());
        Authority::try_from(text).map_err(|_| Refusal::bad("invalid host"))
    };
    let from_host = host.map(|h| normal(h.as_bytes())).transpose()?;
    let authority = match parts.uri.authority() {
        Some(a) => {
            let a = normal(a.as_str().as_bytes())?;
            if from_host.as_ref().is_some_and(|h| h != &a) {
                return Err(Refusal::bad("host differs from :authority"));
            }
            a
        }
        None => from_host.ok_or(Refusal::bad("missing :authority and host"))?,
    };
    let path = parts
        .uri
        .path_and_query()
        .filter(|p| p.as_str().starts_with('/'))
        .cloned()
        .ok_or(Refusal::bad("invalid request target"))?;
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if origin.scheme == Scheme::HTTPS {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    uri.authority = Some(authority);
    uri.path_and_query = Some(path);
    parts.uri = http::Uri::from_parts(uri).map_err(|_| Refusal::bad("invalid request target"))?;
    for name in [
        http::header::HOST,
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
    ] {
        parts.headers.remove(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2(uri: &str, host: Option<&str>) -> Result<String, &'static str> {
        let mut b = http::Request::get(uri).version(http::Version::HTTP_2);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        let (mut parts, ()) = b.body(()).expect("request").into_parts();
        let origin = Origin::http("127.0.0.1:8080".parse().expect("address"));
        normalize_h2(&mut parts, &origin).map_err(|r| r.reason)?;
        assert!(parts.headers.get("host").is_none());
        Ok(parts.uri.to_string())
    }

    #[test]
    fn http2_heads_normalize_like_http1_heads() {
        assert_eq!(
            h2("http://A.example/x", None),
            Ok("http://a.example/x".into())
        );
        assert_eq!(
            h2("http://a.example:80/x", Some("A.example")),
            Ok("http://a.example/x".into())
        );
        assert_eq!(h2("/x", Some("b.example")), Ok("http://b.example/x".into()));
        assert_eq!(
            h2("http://a.example/x", Some("b.example")),
            Err("host differs from :authority")
        );
        assert_eq!(h2("/x", None), Err("missing :authority and host"));
        assert_eq!(
            h2("http://a.example/x", Some("a b")),
            Err("invalid character in host")
        );
    }
}
