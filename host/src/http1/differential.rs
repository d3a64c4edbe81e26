//! Differential test: random well-formed and near-well-formed requests go
//! through this module's parser and body decoder, and through hyper's HTTP/1
//! server, and the two must agree on where each message ends.
//!
//! - Whatever hyper refuses, we refuse.
//! - Whatever we accept, hyper accepts, with the same body, and both find
//!   the next request right after it (no desync).
//! - Where we refuse what hyper accepts, the reason is one of the rules in
//!   which we are deliberately stricter than hyper (nginx's rules, or the
//!   RFC's grammar where hyper is lenient).

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

use super::body::Decoded;
use super::request::{KnownHost, Origin, RequestError, parse_request};

/// Sent after every generated request: where each parser finds it shows
/// where it thinks the generated message ended.
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: a.example\r\n\r\n";

/// Refusals in which this parser is stricter than hyper, by design.
const STRICTER_THAN_HYPER: &[&str] = &[
    "missing host",
    "more than one host",
    "empty host",
    "invalid character in host",
    "invalid host",
    "invalid port in host",
    "userinfo in the authority",
    "more than one content-length",
    "invalid content-length",
    "both transfer-encoding and content-length",
    "unsupported transfer-coding",
    "empty transfer-coding",
    "chunked applied more than once",
    "invalid chunk size",
    "fragment in the request target",
];

#[derive(Debug, PartialEq)]
enum Ours {
    Refused(String),
    /// The body, and the path of the request found right after it.
    Accepted {
        body: Vec<u8>,
        next: Option<String>,
    },
}

#[derive(Debug, PartialEq)]
enum Hyper {
    Refused,
    Accepted { body: Vec<u8>, next: Option<String> },
}

fn ours(raw: &[u8]) -> Ours {
    let mut buf = BytesMut::from(raw);
    buf.extend_from_slice(NEXT);
    let origin = Origin::http("127.0.0.1:80".parse().expect("address"));
    let head = match parse_request(&mut buf, &origin, &mut KnownHost::default()) {
        Ok(Some(head)) => head,
        Ok(None) => return Ours::Refused("incomplete".into()),
        Err(RequestError::TooLarge) => return Ours::Refused("too large".into()),
        Err(RequestError::Refused(r)) => return Ours::Refused(r.reason.into()),
    };
    let mut body = Vec::new();
    if let Some(mut decoder) = head.body {
        loop {
            match decoder.decode(&mut buf, true) {
                Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
                Ok(Decoded::End | Decoded::Trailers(_)) => break,
                Ok(Decoded::NeedMore) => return Ours::Refused("incomplete body".into()),
                Err(e) => return Ours::Refused(e.to_string()),
            }
        }
    }
    let next = match parse_request(&mut buf, &origin, &mut KnownHost::default()) {
        Ok(Some(head)) => Some(head.parts.uri.path().to_string()),
        _ => None,
    };
    Ours::Accepted { body, next }
}

async fn hyper_outcome(raw: &[u8]) -> Hyper {
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let service = service_fn(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.map(|c| c.to_bytes());
            let ok = body.is_ok();
            let _ = tx.send((path, ok, body.unwrap_or_default()));
            Ok::<_, Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(server), service);
    let mut input = raw.to_vec();
    input.extend_from_slice(NEXT);
    // All input, then end of stream: whatever hyper still waits for, it
    // will not get, so it decides from what it has.
    client.write_all(&input).await.expect("in-memory write");
    client.shutdown().await.expect("in-memory shutdown");
    let _ = conn.await;
    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push(event);
    }
    match seen.first() {
        None => Hyper::Refused,
        Some((_, false, _)) => Hyper::Refused,
        Some((_, true, body)) => Hyper::Accepted {
            body: body.to_vec(),
            next: seen.get(1).map(|(path, _, _)| path.clone()),
        },
    }
}

/// A request from parts that are each valid, invalid, or ambiguous.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![Just("GET"), Just("POST"), Just("PUT")];
    let version = prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let target = prop_oneof![
        8 => Just("/x"),
        1 => Just("http://a.example/x"),
        1 => Just("http://u@a.example/x"),
        1 => Just("/x#f"),
    ];
    let host = prop_oneof![
        8 => Just(vec!["a.example"]),
        1 => Just(vec![]),
        1 => Just(vec!["a.example", "b.example"]),
        1 => Just(vec!["a b"]),
        1 => Just(vec!["A.Example:80"]),
    ];
    let length = prop_oneof![
        4 => Just(vec![]),
        3 => Just(vec!["5"]),
        1 => Just(vec!["05"]),
        1 => Just(vec!["+5"]),
        1 => Just(vec!["5,5"]),
        1 => Just(vec!["5, 5"]),
        1 => Just(vec!["-1"]),
        1 => Just(vec!["0x5"]),
        1 => Just(vec!["0"]),
        1 => Just(vec!["5", "5"]),
        1 => Just(vec!["5", "6"]),
        1 => Just(vec!["99999999999999999999"]),
    ];
    let coding = prop_oneof![
        4 => Just(vec![]),
        3 => Just(vec!["chunked"]),
        1 => Just(vec!["Chunked"]),
        1 => Just(vec!["gzip, chunked"]),
        1 => Just(vec!["chunked, chunked"]),
        1 => Just(vec!["chunked", "chunked"]),
        1 => Just(vec!["identity"]),
        1 => Just(vec!["gzip"]),
    ];
    let chunks = prop_oneof![
        4 => Just("5\r\nhello\r\n0\r\n\r\n"),
        1 => Just("5;a=b\r\nhello\r\n0\r\n\r\n"),
        1 => Just("5\r\nhello\r\n0\r\nT: v\r\n\r\n"),
        1 => Just("+5\r\nhello\r\n0\r\n\r\n"),
        1 => Just(" 5\r\nhello\r\n0\r\n\r\n"),
        1 => Just("5 \r\nhello\r\n0\r\n\r\n"),
        1 => Just("0x5\r\nhello\r\n0\r\n\r\n"),
        1 => Just("5\r\nhelloXX0\r\n\r\n"),
        1 => Just("6\r\nhello\r\n0\r\n\r\n"),
        1 => Just("fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ];
    let plain = prop_oneof![Just("hello"), Just(""), Just("hello!")];
    (method, version, target, host, length, coding, chunks, plain).prop_map(
        |(method, version, target, hosts, lengths, codings, chunks, plain)| {
            let mut r = format!("{method} {target} {version}\r\n");
            for h in &hosts {
                r.push_str(&format!("Host: {h}\r\n"));
            }
            if version == "HTTP/1.0" {
                r.push_str("Connection: keep-alive\r\n");
            }
            for l in &lengths {
                r.push_str(&format!("Content-Length: {l}\r\n"));
            }
            for c in &codings {
                r.push_str(&format!("Transfer-Encoding: {c}\r\n"));
            }
            r.push_str("\r\n");
            r.push_str(if codings.is_empty() { plain } else { chunks });
            r.into_bytes()
        },
    )
}

fn check(raw: &[u8]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let theirs = runtime.block_on(hyper_outcome(raw));
    let mine = ours(raw);
    let shown = String::from_utf8_lossy(raw);
    match (&mine, &theirs) {
        (Ours::Refused(_), Hyper::Refused) => {}
        (Ours::Accepted { .. }, Hyper::Refused) => {
            prop_assert!(false, "{shown:?}: hyper refuses what we accept: {mine:?}");
        }
        (Ours::Accepted { body, next }, Hyper::Accepted { body: hb, next: hn }) => {
            prop_assert_eq!(body, hb, "{:?}: bodies differ", shown);
            prop_assert_eq!(next, hn, "{:?}: the next request differs", shown);
        }
        (Ours::Refused(why), Hyper::Accepted { .. }) => {
            prop_assert!(
                STRICTER_THAN_HYPER.iter().any(|s| why.contains(s)),
                "{shown:?}: we refuse ({why}) what hyper accepts"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn we_agree_with_hyper_on_where_messages_end(raw in request()) {
        check(&raw)?;
    }
}

#[test]
fn known_desync_vectors_agree_with_hyper() {
    for raw in [
        &b"POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello"[..],
        b"POST /x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ] {
        if let Err(e) = check(raw) {
            panic!("{e}");
        }
    }
}
