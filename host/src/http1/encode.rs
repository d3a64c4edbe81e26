//! Writing request heads towards backends.
//!
//! The framing lines are written from the decision in hand — the body's
//! known length, or chunked — never copied from what the client sent, and
//! `Host` is written from the normalized target. A value the client wrote
//! for either therefore cannot reach a backend.

use http::header::HeaderName;
use http::{Method, request};
use http_body::Body;

/// How a request body goes to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body, and no framing line (`GET` and the like).
    None,
    /// `Content-Length: n` (also 0, for methods whose requests carry
    /// content, as hyper's client does).
    Length(u64),
    /// Unknown length: `Transfer-Encoding: chunked`.
    Chunked,
}

/// Methods whose requests do not normally carry content: an empty body is
/// sent without a `Content-Length` (RFC 9110 §8.6).
fn expects_no_content(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The framing of a request with `body` (or none).
pub fn framing_for<B: Body>(method: &Method, body: Option<&B>) -> BodyFraming {
    let exact = match body {
        None => Some(0),
        Some(b) if b.is_end_stream() => Some(0),
        Some(b) => b.size_hint().exact(),
    };
    match exact {
        Some(0) if expects_no_content(method) => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::Chunked,
    }
}

/// Appends `METHOD target HTTP/1.1`, `Host` from the target's authority,
/// the headers except those `skip` names, the proxy's `added` lines, the
/// framing line and the blank line.
pub fn encode_request_head(
    parts: &request::Parts,
    added: &[u8],
    skip: impl Fn(&HeaderName) -> bool,
    framing: BodyFraming,
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
    if let Some(authority) = parts.uri.authority() {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        if is_managed(name) || skip(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(added);
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0u8; 20]));
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Headers only the wire layer writes. Heads parsed here never carry them
/// in their maps; heads from elsewhere (HTTP/2) might.
pub fn is_managed(name: &HeaderName) -> bool {
    name == http::header::HOST
        || name == http::header::CONTENT_LENGTH
        || name == http::header::TRANSFER_ENCODING
}

/// Decimal digits of `n`, written into `buf`.
pub fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    use http_body_util::{Empty, Full};

    fn parts(uri: &str, method: Method) -> request::Parts {
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request");
        let h = req.headers_mut();
        h.insert("host", HeaderValue::from_static("client.example"));
        h.insert("content-length", HeaderValue::from_static("+5"));
        h.insert("transfer-encoding", HeaderValue::from_static("gzip"));
        h.insert("x-a", HeaderValue::from_static("1"));
        req.into_parts().0
    }

    fn encode(p: &request::Parts, framing: BodyFraming) -> String {
        let mut out = Vec::new();
        encode_request_head(p, b"via: 1.1 switchyard\r\n", |_| false, framing, &mut out);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn framing_and_host_come_from_the_decision_not_the_client() {
        let p = parts("http://a.example/a/b?c=1", Method::POST);
        assert_eq!(
            encode(&p, BodyFraming::Length(5)),
            "POST /a/b?c=1 HTTP/1.1\r\nhost: a.example\r\nx-a: 1\r\nvia: 1.1 switchyard\r\ncontent-length: 5\r\n\r\n"
        );
        assert!(encode(&p, BodyFraming::Chunked).ends_with("transfer-encoding: chunked\r\n\r\n"));
        let get = parts("http://a.example/", Method::GET);
        assert!(!encode(&get, BodyFraming::None).contains("content-length"));
    }

    #[test]
    fn framing_follows_the_body() {
        let full = Full::new(bytes::Bytes::from_static(b"abc"));
        assert_eq!(
            framing_for(&Method::PUT, Some(&full)),
            BodyFraming::Length(3)
        );
        let empty = Empty::<bytes::Bytes>::new();
        assert_eq!(
            framing_for(&Method::POST, Some(&empty)),
            BodyFraming::Length(0)
        );
        assert_eq!(framing_for(&Method::GET, Some(&empty)), BodyFraming::None);
        assert_eq!(
            framing_for::<Empty<bytes::Bytes>>(&Method::GET, None),
            BodyFraming::None
        );
        let stream = http_body_util::StreamBody::new(futures_util::stream::empty::<
            Result<http_body::Frame<bytes::Bytes>, std::io::Error>,
        >());
        assert_eq!(
            framing_for(&Method::POST, Some(&stream)),
            BodyFraming::Chunked
        );
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(1234567890, &mut [0; 20]), b"1234567890");
    }
}
