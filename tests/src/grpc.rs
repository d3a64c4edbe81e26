//! gRPC for tests: a service run by tonic's server machinery on a hyper
//! HTTP/2 server (so a test can count connections, hold calls, send GOAWAY
//! and speak TLS), and a tonic client. Messages are hand-written prost
//! structs, so no protoc is needed.
//!
//! The service `test.Echo`:
//! - `Say` (unary) answers `"{backend}:{text}"`; text `fail` gets
//!   FAILED_PRECONDITION with details, `slow` waits `n` ms, `hold` waits
//!   until [`GrpcBackend::release`]; every call is UNAVAILABLE while
//!   [`GrpcBackend::set_unavailable`] is on;
//! - `Count` (server streaming) sends `n` messages `0..n`;
//! - `Chat` (bidirectional) answers each message upper-cased, as it comes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use http::Request;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tonic::server::{Grpc, ServerStreamingService, StreamingService, UnaryService};
use tonic::{Code, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message type of `test.Echo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub n: u32,
}

pub fn msg(text: &str, n: u32) -> Msg {
    Msg {
        text: text.to_string(),
        n,
    }
}

/// The details `Say("fail")` attaches to its status.
pub const DETAILS: &[u8] = b"\x08\x09details \xff bytes";

#[derive(Default)]
struct State {
    name: String,
    unavailable: AtomicBool,
    calls: AtomicU64,
    in_flight: AtomicU64,
    health_checks: AtomicU64,
    released: AtomicBool,
    release: Notify,
}

pub struct GrpcBackend {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    state: Arc<State>,
    goaway: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Say(Arc<State>);

impl UnaryService<Msg> for Say {
    type Response = Msg;
    type Future = BoxFuture<'static, Result<tonic::Response<Msg>, Status>>;

    fn call(&mut self, request: tonic::Request<Msg>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.calls.fetch_add(1, SeqCst);
            if state.unavailable.load(SeqCst) {
                return Err(Status::unavailable("draining"));
            }
            let m = request.into_inner();
            match m.text.as_str() {
                "fail" => {
                    return Err(Status::with_details(
                        Code::FailedPrecondition,
                        "precondition failed",
                        Bytes::from_static(DETAILS),
                    ));
                }
                "slow" => tokio::time::sleep(Duration::from_millis(m.n.into())).await,
                "hold" => {
                    state.in_flight.fetch_add(1, SeqCst);
                    let released = state.release.notified();
                    if !state.released.load(SeqCst) {
                        released.await;
                    }
                    state.in_flight.fetch_sub(1, SeqCst);
                }
                _ => {}
            }
            Ok(tonic::Response::new(msg(
                &format!("{}:{}", state.name, m.text),
                m.n,
            )))
        })
    }
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

struct Count;

impl ServerStreamingService<Msg> for Count {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<'static, Result<tonic::Response<MsgStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Msg>) -> Self::Future {
        let n = request.into_inner().n;
        let out = futures_util::stream::iter((0..n).map(|i| Ok(msg(&i.to_string(), i))));
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(out) as MsgStream)) })
    }
}

struct Chat;

impl StreamingService<Msg> for Chat {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<'static, Result<tonic::Response<MsgStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<Msg>>) -> Self::Future {
        let out = request
            .into_inner()
            .map(|m| m.map(|m| msg(&m.text.to_uppercase(), m.n)));
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(out) as MsgStream)) })
    }
}

/// A connection closed the way careful servers close one (nginx's
/// `lingering_close`): the writing side is shut, then what the peer still
/// sends is read and dropped until it closes too. Closed at once, a socket
/// with unread bytes sends a reset, and the peer's kernel may drop
/// responses it has not read yet.
struct Lingering<IO>(IO);

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Lingering<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite
    for Lingering<IO>
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.0).poll_shutdown(cx))?;
        let mut scratch = [0u8; 1024];
        loop {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            std::task::ready!(Pin::new(&mut self.0).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return std::task::Poll::Ready(Ok(()));
            }
        }
    }
}

/// Serves `test.Echo` (and `GET /healthz`) on one connection.
async fn serve<IO>(io: IO, state: Arc<State>, max_streams: u32, mut goaway: watch::Receiver<u64>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let mut grpc = Grpc::new(ProstCodec::<Msg, Msg>::default());
            let response = match req.uri().path() {
                "/healthz" => {
                    state.health_checks.fetch_add(1, SeqCst);
                    http::Response::new(tonic::body::Body::empty())
                }
                "/test.Echo/Say" => grpc.unary(Say(state), req).await,
                "/test.Echo/Count" => grpc.server_streaming(Count, req).await,
                "/test.Echo/Chat" => grpc.streaming(Chat, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(max_streams)
        .serve_connection(TokioIo::new(Lingering(io)), svc);
    let mut conn = std::pin::pin!(conn);
    // Told to go away by a GOAWAY round that began after it opened.
    let opened_in = *goaway.borrow_and_update();
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = goaway.wait_for(|round| *round > opened_in) => {}
    }
    // GOAWAY: streams already open finish, new ones go elsewhere.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

impl GrpcBackend {
    /// A cleartext backend allowing `max_streams` concurrent streams per
    /// connection.
    pub async fn start(name: &str, max_streams: u32) -> GrpcBackend {
        Self::start_on("127.0.0.1:0", name, max_streams, None).await
    }

    /// The same over TLS (ALPN `h2`) with a certificate (DER) and its key
    /// (PEM).
    pub async fn start_tls(name: &str, cert_der: &[u8], key_pem: &str) -> GrpcBackend {
        use rustls::pki_types::pem::PemObject;
        let chain = vec![rustls::pki_types::CertificateDer::from(cert_der.to_vec())];
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_on("127.0.0.1:0", name, 100, Some(acceptor)).await
    }

    /// A backend on `addr`, over TLS with `tls`.
    pub async fn start_on(
        addr: &str,
        name: &str,
        max_streams: u32,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> GrpcBackend {
        let tcp = TcpListener::bind(addr).await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let state = Arc::new(State {
            name: name.to_string(),
            ..State::default()
        });
        let connections = Arc::new(AtomicU64::new(0));
        let (goaway, watching) = watch::channel(0);
        let (st, c) = (state.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                c.fetch_add(1, SeqCst);
                let (st, tls, watching) = (st.clone(), tls.clone(), watching.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, st, max_streams, watching).await,
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve(s, st, max_streams, watching).await;
                            }
                        }
                    }
                });
            }
        });
        GrpcBackend {
            addr,
            connections,
            state,
            goaway,
            task,
        }
    }

    pub fn calls(&self) -> u64 {
        self.state.calls.load(SeqCst)
    }

    /// `Say("hold")` calls waiting for [`release`](Self::release).
    pub fn held(&self) -> u64 {
        self.state.in_flight.load(SeqCst)
    }

    pub fn health_checks(&self) -> u64 {
        self.state.health_checks.load(SeqCst)
    }

    pub fn set_unavailable(&self, on: bool) {
        self.state.unavailable.store(on, SeqCst);
    }

    /// Lets every held call (and any later one) answer.
    pub fn release(&self) {
        self.state.released.store(true, SeqCst);
        self.state.release.notify_waiters();
    }

    /// Sends GOAWAY on every open connection (new ones are still accepted
    /// and served).
    pub fn goaway(&self) {
        self.goaway.send_modify(|round| *round += 1);
    }
}

/// A tonic client of `test.Echo` on `channel`.
#[derive(Clone)]
pub struct EchoClient(tonic::client::Grpc<tonic::transport::Channel>);

impl EchoClient {
    pub async fn connect(url: String) -> EchoClient {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        EchoClient(tonic::client::Grpc::new(channel))
    }

    pub fn over(channel: tonic::transport::Channel) -> EchoClient {
        EchoClient(tonic::client::Grpc::new(channel))
    }

    pub async fn say(
        &mut self,
        request: tonic::Request<Msg>,
    ) -> Result<tonic::Response<Msg>, Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        self.0
            .unary(
                request,
                PathAndQuery::from_static("/test.Echo/Say"),
                ProstCodec::<Msg, Msg>::default(),
            )
            .await
    }

    pub async fn count(&mut self, n: u32) -> Result<Vec<Msg>, Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let mut stream = self
            .0
            .server_streaming(
                tonic::Request::new(msg("", n)),
                PathAndQuery::from_static("/test.Echo/Count"),
                ProstCodec::<Msg, Msg>::default(),
            )
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.message().await? {
            out.push(m);
        }
        Ok(out)
    }

    /// Opens a `Chat`: messages go in through the sender, answers come out
    /// of the stream.
    pub async fn chat(
        &mut self,
    ) -> Result<(tokio::sync::mpsc::Sender<Msg>, Streaming<Msg>), Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        let inbound = self
            .0
            .streaming(
                tonic::Request::new(outbound),
                PathAndQuery::from_static("/test.Echo/Chat"),
                ProstCodec::<Msg, Msg>::default(),
            )
            .await?
            .into_inner();
        Ok((tx, inbound))
    }
}
