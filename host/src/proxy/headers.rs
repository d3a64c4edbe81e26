//! Header rules on the way to the backend and back.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1, and any header named in
//! `Connection`) are removed in both directions. Towards the backend the
//! client's `Host` is preserved, `X-Forwarded-For` gets the client address
//! appended, `X-Forwarded-Proto` and `X-Forwarded-Host` are set (overwriting
//! what the client sent: this proxy is the edge that knows), and `Via` gets
//! our hop appended. Responses get `Via` too.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Version, request, response};

use super::ConnInfo;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 switchyard",
        Version::HTTP_2 => "2 switchyard",
        Version::HTTP_3 => "3 switchyard",
        _ => "1.1 switchyard",
    })
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let hop = |name: &HeaderName| {
        name == header::CONNECTION
            || name == header::TE
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
    };
    // Most messages carry none: one pass over the names instead of a hash
    // lookup per hop-by-hop header.
    if !headers.keys().any(hop) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION).cloned()
        && let Ok(list) = connection.to_str()
    {
        for name in list.split(',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The host a request is for, without a port: the URI authority (HTTP/2,
/// absolute-form) or the `Host` header.
pub fn request_host(parts: &request::Parts) -> &str {
    let raw = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    };
    strip_port(raw)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether a client header is left out towards the backend because the
/// proxy sets its own.
pub fn replaced_by_proxy(name: &HeaderName) -> bool {
    name == X_FORWARDED_FOR || name == X_FORWARDED_HOST || name == X_FORWARDED_PROTO
}

fn line(out: &mut Vec<u8>, name: &str, parts: &[&[u8]]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// Prepares a client request for the backend: removes hop-by-hop headers
/// and returns the header lines the proxy adds, encoded, for the request
/// encoder to append (no header-map insertions on the hot path).
pub fn prepare_request(parts: &mut request::Parts, conn: &ConnInfo) -> Vec<u8> {
    remove_hop_by_hop(&mut parts.headers);
    let headers = &parts.headers;
    let host = headers.get(header::HOST);
    let mut out = Vec::with_capacity(160);
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    if host.is_none()
        && let Some(a) = authority
    {
        line(&mut out, "host", &[a]);
    }
    if let Some(h) = authority.or(host.map(HeaderValue::as_bytes)) {
        line(&mut out, "x-forwarded-host", &[h]);
    }
    // Earlier hops' addresses first, then this client's.
    out.extend_from_slice(b"x-forwarded-for: ");
    for prior in headers.get_all(&X_FORWARDED_FOR) {
        let prior = prior.as_bytes().trim_ascii();
        if !prior.is_empty() {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(conn.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    line(&mut out, "x-forwarded-proto", &[b"http"]);
    line(&mut out, "via", &[via_value(parts.version).as_bytes()]);
    // Backends are spoken to in HTTP/1.1 whatever the client used.
    parts.version = Version::HTTP_11;
    out
}

/// Rewrites a backend response's headers for the client.
pub fn prepare_response(parts: &mut response::Parts) {
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.append(header::VIA, via_value(parts.version));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
    }
}
