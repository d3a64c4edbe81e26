//! Header rules on the way to the backend and back.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1, and any header named on any
//! `Connection` line) are removed in both directions; the headers the wire
//! layer manages (`Host`, `Content-Length`, `Transfer-Encoding`) cannot be
//! removed that way, since they are written from the normalized head.
//!
//! Forwarding headers depend on who the peer is. From a peer outside
//! `listen.trusted_proxies` (every peer, by default), `Forwarded`,
//! `X-Forwarded-For`, `-Host`, `-Proto` and `X-Real-IP` are replaced by
//! this proxy's own: a client cannot forge the address a backend sees.
//! From a trusted peer (a load balancer in front), `Forwarded` and
//! `X-Forwarded-For` are appended to, and its `X-Forwarded-Host`, `-Proto`
//! and `X-Real-IP` are kept when present. `Via` gets our hop appended in
//! both directions.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Version, request, response};

use super::ConnInfo;
use crate::http1::encode::is_managed;
use crate::http1::server::accepts_trailers;
use crate::http1::tunnel::UpgradeRequested;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
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

/// Removes hop-by-hop headers, including those any `Connection` line
/// names (but never the ones the wire layer manages); says whether a `TE`
/// among them listed `trailers`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) -> bool {
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
        return false;
    }
    let trailers = accepts_trailers(headers);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .filter(|name| !is_managed(name))
        .collect();
    for name in named {
        headers.remove(name);
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
    trailers
}

/// The host a request is for, without a port: the normalized authority.
pub fn request_host(parts: &request::Parts) -> &str {
    parts.uri.host().unwrap_or("")
}

/// Whether a client header is left out towards the backend because the
/// proxy writes its own line for it (see [`prepare_request`]).
pub fn replaced_by_proxy(name: &HeaderName) -> bool {
    name == X_FORWARDED_FOR
        || name == X_FORWARDED_HOST
        || name == X_FORWARDED_PROTO
        || name == header::FORWARDED
        || name == X_REAL_IP
}

/// `name: earlier, ours` from a trusted peer, `name: ours` otherwise.
fn appended(
    out: &mut Vec<u8>,
    headers: &HeaderMap,
    name: &HeaderName,
    trusted: bool,
    ours: &[&[u8]],
) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    if trusted {
        for prior in headers.get_all(name) {
            let prior = prior.as_bytes().trim_ascii();
            if !prior.is_empty() {
                out.extend_from_slice(prior);
                out.extend_from_slice(b", ");
            }
        }
    }
    for p in ours {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// `name: theirs` when the (trusted) peer sent one, `name: ours` otherwise.
fn kept_or_set(out: &mut Vec<u8>, headers: &HeaderMap, name: &HeaderName, ours: &[u8]) {
    let theirs = headers.get(name).map(HeaderValue::as_bytes);
    appended(out, headers, name, false, &[theirs.unwrap_or(ours)]);
}

/// Prepares a client request for the backend: removes hop-by-hop headers
/// and returns the header lines the proxy adds, encoded, for the request
/// encoder to append (no header-map insertions on the hot path). The
/// client's own lines for these headers are left out by the encoder (see
/// [`replaced_by_proxy`]).
pub fn prepare_request(parts: &mut request::Parts, conn: &ConnInfo) -> Vec<u8> {
    // An upgrade keeps its `Upgrade` (the protocol asked for) and says so
    // in `Connection`; any other request's `Upgrade` is hop-by-hop.
    let upgrade = parts
        .extensions
        .get::<UpgradeRequested>()
        .and_then(|_| parts.headers.get(header::UPGRADE).cloned());
    // `TE: trailers` is hop-by-hop, but says the same of every hop: the
    // client takes trailers, so the backend may send them (gRPC needs it).
    let trailers = remove_hop_by_hop(&mut parts.headers);
    let authority = parts
        .uri
        .authority()
        .map_or(&b""[..], |a| a.as_str().as_bytes());
    let proto: &[u8] = if parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        b"https"
    } else {
        b"http"
    };
    let via = via_value(parts.version);
    // Backends are spoken to in HTTP/1.1 whatever the client used.
    parts.version = Version::HTTP_11;
    // RFC 7239: a host with a port (or an IP literal) is quoted.
    let quote_host = authority.iter().any(|b| matches!(b, b':' | b'[' | b']'));
    let mut out = Vec::with_capacity(256);
    let ip = conn.ip_text();
    let v6 = conn.remote.is_ipv6();
    if !conn.trusted {
        // The common case: ours only, written in as few pieces as it takes.
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(ip);
        out.extend_from_slice(b"\r\nx-real-ip: ");
        out.extend_from_slice(ip);
        out.extend_from_slice(if v6 {
            b"\r\nforwarded: for=\"["
        } else {
            b"\r\nforwarded: for="
        });
        out.extend_from_slice(ip);
        out.extend_from_slice(match (v6, quote_host) {
            (true, true) => b"]\";host=\"",
            (true, false) => b"]\";host=",
            (false, true) => b";host=\"",
            (false, false) => b";host=",
        });
        out.extend_from_slice(authority);
        out.extend_from_slice(if quote_host { b"\";proto=" } else { b";proto=" });
        out.extend_from_slice(proto);
        out.extend_from_slice(b"\r\nx-forwarded-host: ");
        out.extend_from_slice(authority);
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(proto);
        out.extend_from_slice(b"\r\nvia: ");
        out.extend_from_slice(via.as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        trusted_forwarding(
            &mut out,
            &parts.headers,
            ip,
            v6,
            authority,
            quote_host,
            proto,
        );
        appended(
            &mut out,
            &parts.headers,
            &header::VIA,
            false,
            &[via.as_bytes()],
        );
    }
    if trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    if let Some(protocol) = upgrade {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The forwarding lines for a trusted peer: its chain appended to, its
/// host, proto and real IP kept.
fn trusted_forwarding(
    out: &mut Vec<u8>,
    headers: &HeaderMap,
    ip: &[u8],
    v6: bool,
    authority: &[u8],
    quote_host: bool,
    proto: &[u8],
) {
    appended(out, headers, &X_FORWARDED_FOR, true, &[ip]);
    kept_or_set(out, headers, &X_REAL_IP, ip);
    let q: &[u8] = if quote_host { b"\"" } else { b"" };
    let ours = [
        &b"for="[..],
        if v6 { b"\"[" } else { b"" },
        ip,
        if v6 { b"]\"" } else { b"" },
        b";host=",
        q,
        authority,
        q,
        b";proto=",
        proto,
    ];
    appended(out, headers, &header::FORWARDED, true, &ours);
    kept_or_set(out, headers, &X_FORWARDED_HOST, authority);
    kept_or_set(out, headers, &X_FORWARDED_PROTO, proto);
}

/// Rewrites a backend response's headers for the client. A `101` keeps
/// its `Upgrade` (the protocol switched to); the wire layer writes its
/// `Connection: upgrade`.
pub fn prepare_response(parts: &mut response::Parts) {
    let upgrade = (parts.status == http::StatusCode::SWITCHING_PROTOCOLS)
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade {
        parts.headers.insert(header::UPGRADE, protocol);
    }
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
    fn connection_cannot_remove_managed_headers_and_every_line_counts() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("Host, Content-Length"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-second"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert("x-second", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert!(h.contains_key(header::HOST) && h.contains_key(header::CONTENT_LENGTH));
        assert!(
            !h.contains_key("x-second"),
            "a second Connection line counts too"
        );
    }

    fn forwarded(trusted: bool, remote: &str) -> String {
        let mut req = http::Request::get("http://a.example:8080/x")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-forwarded-proto", "https")
            .header("x-real-ip", "1.1.1.1")
            .header("forwarded", "for=1.1.1.1")
            .body(())
            .expect("request");
        *req.version_mut() = Version::HTTP_11;
        let (mut parts, ()) = req.into_parts();
        let remote = remote.parse().expect("address");
        let conn = ConnInfo::new(
            remote,
            "127.0.0.1:80".parse().expect("address"),
            trusted,
            false,
        );
        String::from_utf8(prepare_request(&mut parts, &conn)).expect("ascii")
    }

    #[test]
    fn untrusted_peers_cannot_forge_forwarding_headers() {
        assert_eq!(
            forwarded(false, "10.0.0.7:5000"),
            "x-forwarded-for: 10.0.0.7\r\nx-real-ip: 10.0.0.7\r\n\
             forwarded: for=10.0.0.7;host=\"a.example:8080\";proto=http\r\n\
             x-forwarded-host: a.example:8080\r\nx-forwarded-proto: http\r\nvia: 1.1 switchyard\r\n"
        );
        assert_eq!(
            forwarded(true, "[::1]:5000"),
            "x-forwarded-for: 1.1.1.1, ::1\r\nx-real-ip: 1.1.1.1\r\n\
             forwarded: for=1.1.1.1, for=\"[::1]\";host=\"a.example:8080\";proto=http\r\n\
             x-forwarded-host: a.example:8080\r\nx-forwarded-proto: https\r\nvia: 1.1 switchyard\r\n"
        );
        assert_eq!(
            forwarded(false, "[::1]:5000").lines().nth(2),
            Some("forwarded: for=\"[::1]\";host=\"a.example:8080\";proto=http")
        );
        for name in [
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-real-ip",
            "forwarded",
        ] {
            assert!(replaced_by_proxy(&HeaderName::from_static(name)), "{name}");
        }
    }
}
