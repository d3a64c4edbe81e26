//! gRPC and HTTP/2 to backends: a tonic client through the proxy to a
//! gRPC service on `protocol = "h2"` upstreams, over cleartext and TLS.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::Code;

use crate::support::grpc::{DETAILS, EchoClient, GrpcBackend, msg};
use crate::support::tls::Ca;
use crate::support::{Proxy, config, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn h2_upstream(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    config(&format!(
        "[upstreams.app]\nprotocol = \"h2\"\nstrategy = \"round_robin\"\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    ))
}

/// One gRPC call sent with a plain HTTP/2 client: the response head.
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    m: &crate::support::grpc::Msg,
) -> http::Response<hyper::body::Incoming> {
    use http_body_util::Full;
    use prost::Message;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("handshake");
    tokio::spawn(conn);
    let payload = m.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(frame)))
        .expect("request");
    tokio::time::timeout(WAIT, send.send_request(request))
        .await
        .expect("an answer")
        .expect("response")
}

async fn client(proxy: &Proxy) -> EchoClient {
    EchoClient::connect(proxy.url("")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_streaming_and_bidirectional_calls_pass_with_their_statuses() {
    let backend = GrpcBackend::start("a", 100).await;
    let proxy = Proxy::start(&h2_upstream(&[backend.addr], ""));
    let mut c = client(&proxy).await;

    let reply = c
        .say(tonic::Request::new(msg("hi", 7)))
        .await
        .expect("unary");
    assert_eq!(reply.get_ref(), &msg("a:hi", 7));

    let counted = c.count(50).await.expect("server streaming");
    let texts: Vec<String> = counted.iter().map(|m| m.text.clone()).collect();
    let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(texts, expected);

    // Bidirectional: each answer comes back before the next message is sent.
    let (tx, mut answers) = c.chat().await.expect("chat");
    for (i, word) in ["one", "two", "three"].iter().enumerate() {
        tx.send(msg(word, i as u32)).await.expect("send");
        let answer = tokio::time::timeout(WAIT, answers.message())
            .await
            .expect("an answer per message")
            .expect("stream")
            .expect("message");
        assert_eq!(answer, msg(&word.to_uppercase(), i as u32));
    }
    drop(tx);
    assert!(answers.message().await.expect("clean end").is_none());

    // A status with details travels in the trailers, intact.
    let status = c
        .say(tonic::Request::new(msg("fail", 0)))
        .await
        .expect_err("FAILED_PRECONDITION");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "precondition failed");
    assert_eq!(status.details(), DETAILS);

    let ok = proxy
        .metric(
            "switchyard_grpc_responses_total",
            &[("route", "*/"), ("grpc_status", "0")],
        )
        .await;
    assert_eq!(ok, 3.0, "unary, streaming and chat ended OK");
    let failed = proxy
        .metric(
            "switchyard_grpc_responses_total",
            &[("route", "*/"), ("grpc_status", "9")],
        )
        .await;
    assert_eq!(failed, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_on_another_backend() {
    let down = GrpcBackend::start("down", 100).await;
    let up = GrpcBackend::start("up", 100).await;
    down.set_unavailable(true);
    let proxy = Proxy::start(&h2_upstream(
        &[down.addr, up.addr],
        "[upstreams.app.retry]\nattempts = 2\n",
    ));
    let mut c = client(&proxy).await;
    for i in 0..10 {
        let reply = c
            .say(tonic::Request::new(msg("x", i)))
            .await
            .expect("every call succeeds");
        assert_eq!(
            reply.get_ref(),
            &msg("up:x", i),
            "answered by the live backend"
        );
    }
    assert!(
        down.calls() >= 1,
        "round robin sent calls to the down backend first"
    );
    assert_eq!(up.calls(), 10);
    assert!(proxy.metric("switchyard_retries_total", &[]).await >= down.calls() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_deadline_exceeded_not_a_bare_504() {
    let backend = GrpcBackend::start("a", 100).await;
    let proxy = Proxy::start(&format!(
        "{}\n[timeouts]\nbackend_response = \"300ms\"\n",
        h2_upstream(&[backend.addr], "[upstreams.app.retry]\nattempts = 1\n")
    ));
    let mut c = client(&proxy).await;
    let status = c
        .say(tonic::Request::new(msg("slow", 5_000)))
        .await
        .expect_err("too slow");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "backend timed out");

    // The client's own grpc-timeout shortens the deadline the same way.
    // (Sent by hand: tonic's client would enforce it itself, first.)
    let proxy2 = Proxy::start(&h2_upstream(&[backend.addr], ""));
    let response = raw_call(
        proxy2.addr,
        "/test.Echo/Say",
        &[("grpc-timeout", "200m")],
        &msg("slow", 5_000),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "4", "{response:?}");
    let counted = proxy
        .metric(
            "switchyard_grpc_responses_total",
            &[("route", "*/"), ("grpc_status", "4")],
        )
        .await;
    assert_eq!(counted, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_multiplexed_within_the_backends_stream_limit_and_goaway_drains() {
    const LIMIT: u64 = 8;
    let backend = GrpcBackend::start("a", LIMIT as u32).await;
    let proxy = Proxy::start(&h2_upstream(
        &[backend.addr],
        "[upstreams.app.health]\npath = \"/healthz\"\ninterval = \"200ms\"",
    ));
    let c = client(&proxy).await;
    // One call first: the backend's SETTINGS (its stream limit) are known.
    c.clone()
        .say(tonic::Request::new(msg("warm", 0)))
        .await
        .expect("warm-up");
    eventually(WAIT, "health checks over HTTP/2", || async {
        (backend.health_checks() >= 2).then_some(())
    })
    .await;

    let calls: Vec<_> = (0..40)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move { c.say(tonic::Request::new(msg("hold", i))).await })
        })
        .collect();
    // Four connections of eight streams each are open at the backend; the
    // other eight calls wait in the proxy for a free stream.
    eventually(WAIT, "32 calls held at the backend", || async {
        (backend.held() == 32).then_some(())
    })
    .await;
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        4
    );

    // GOAWAY on every connection while 32 calls are open on them: they
    // finish there, and new calls go on a new connection.
    backend.goaway();
    backend.release();
    for call in calls {
        let reply = call.await.expect("task").expect("every held call succeeds");
        assert!(reply.get_ref().text.starts_with("a:hold"));
    }
    for i in 0..5 {
        c.clone()
            .say(tonic::Request::new(msg("after", i)))
            .await
            .expect("calls after GOAWAY succeed");
    }
    let conns = backend
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(conns > 4, "a new connection after GOAWAY ({conns})");
    assert!(
        conns < 40,
        "multiplexed: fewer connections than calls ({conns})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_at_both_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("grpc test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let backend_leaf = ca.server(&["127.0.0.1"]);
    let backend = GrpcBackend::start_tls("tls", &backend_leaf.der, &backend_leaf.key_pem).await;
    let (cert, key) = ca.server(&["localhost"]).write(dir.path(), "proxy");
    let cfg = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [tls]\naddress = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
         [[routes]]\nupstream = \"app\"\n\
         [upstreams.app]\nprotocol = \"h2\"\nbackends = [{{ address = \"{}\" }}]\n\
         tls = {{ ca = \"{}\" }}\n",
        cert.display(),
        key.display(),
        backend.addr,
        ca_path.display()
    );
    let proxy = Proxy::start(&cfg);
    let tls_addr = proxy.tls.expect("HTTPS address");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{tls_addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect over TLS");
    let mut c = EchoClient::over(channel);
    let reply = c
        .say(tonic::Request::new(msg("secure", 1)))
        .await
        .expect("unary");
    assert_eq!(reply.get_ref(), &msg("tls:secure", 1));
    assert_eq!(c.count(3).await.expect("streaming").len(), 3);
}
