//! HTTP/2 towards backends (`protocol = "h2"` on an upstream): prior
//! knowledge over cleartext, ALPN `h2` over TLS.
//!
//! Each backend has a small pool of multiplexed connections ([`H2Pool`]).
//! A request goes on the connection with the fewest open streams that
//! still has room under the backend's `SETTINGS_MAX_CONCURRENT_STREAMS`;
//! when none has, one more connection is opened (one dial at a time), up
//! to [`MAX_CONNECTIONS`], beyond which the request waits here for a
//! stream to end. It is never handed to a connection without room: h2
//! would queue it inside the connection, and a GOAWAY would then drop it
//! with its body. A connection that ends or sends GOAWAY takes no new
//! stream; the ones it already carries finish on it. A request a closing
//! connection hands back unsent goes on another; a stream the backend
//! refused without processing it (above a GOAWAY's last stream id, or
//! reset with `REFUSED_STREAM`) is reported as such, so the caller can
//! send it again elsewhere.
//!
//! hyper's HTTP/2 client does the framing, flow control and trailers; this
//! module owns the pooling, which hyper leaves to its callers, and the
//! translation of the proxy's normalized HTTP/1 head.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::http1::client::{self, Outbound, Stream, TlsTarget, UpstreamError};
use crate::http1::encode::is_managed;
use crate::http1::{BoxBody, BoxError, empty_body};

/// Connections per backend at most.
pub const MAX_CONNECTIONS: usize = 4;

/// A PING after this much silence tells a dead connection from an idle one.
const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// What a connection's driver task publishes for the pool.
#[derive(Debug)]
struct Shared {
    /// Streams open on it: from the send to the end of the response body.
    active: AtomicUsize,
    /// The backend's `SETTINGS_MAX_CONCURRENT_STREAMS`, as last seen.
    max: AtomicUsize,
    /// Ended, failed or told to go away: takes no new stream.
    closed: AtomicBool,
    /// The pool's: told when a stream ends or a connection closes.
    freed: Arc<tokio::sync::Notify>,
}

impl Shared {
    fn close(&self) {
        self.closed.store(true, Relaxed);
        self.freed.notify_waiters();
    }
}

struct Conn {
    send: SendRequest<BoxBody>,
    shared: Arc<Shared>,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.shared.closed.load(Relaxed) && !self.send.is_closed()
    }

    fn room(&self) -> bool {
        self.shared.active.load(Relaxed) < self.shared.max.load(Relaxed).max(1)
    }
}

/// One open stream, counted on its connection until dropped (which the
/// response body does at its end).
#[derive(Debug)]
pub struct StreamGuard(Arc<Shared>);

impl StreamGuard {
    fn open(shared: &Arc<Shared>) -> Self {
        shared.active.fetch_add(1, Relaxed);
        StreamGuard(shared.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
        self.0.freed.notify_one();
    }
}

/// Why an HTTP/2 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// No connection: TCP or TLS failed, nothing was sent.
    #[error("{0}")]
    Connect(UpstreamError),
    #[error("the backend did not agree to HTTP/2 by ALPN")]
    NoAlpn,
    /// The backend did not process the stream (GOAWAY, `REFUSED_STREAM`):
    /// it can be sent again.
    #[error("the backend refused the stream unprocessed: {0}")]
    Refused(hyper::Error),
    #[error("HTTP/2 exchange failed: {0}")]
    Failed(hyper::Error),
    #[error("cannot send this request over HTTP/2: {0}")]
    Request(String),
}

/// The multiplexed connections to one backend.
pub struct H2Pool {
    tls: Option<TlsTarget>,
    conns: Mutex<Vec<Conn>>,
    /// One dial at a time: a burst waits for the connection being opened
    /// instead of opening one each.
    dialing: tokio::sync::Mutex<()>,
    freed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool")
            .field("connections", &self.connections())
            .field("tls", &self.tls)
            .finish()
    }
}

impl H2Pool {
    pub fn new(tls: Option<TlsTarget>) -> Self {
        H2Pool {
            tls,
            conns: Mutex::default(),
            dialing: tokio::sync::Mutex::new(()),
            freed: Arc::default(),
        }
    }

    /// Open connections that take new streams.
    pub fn connections(&self) -> usize {
        self.lock().iter().filter(|c| c.usable()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The least loaded usable connection, if it has room, and how many
    /// usable connections there are.
    fn pick(&self) -> Result<(SendRequest<BoxBody>, StreamGuard), usize> {
        let mut conns = self.lock();
        conns.retain(Conn::usable);
        match conns.iter().min_by_key(|c| c.shared.active.load(Relaxed)) {
            Some(best) if best.room() => Ok((best.send.clone(), StreamGuard::open(&best.shared))),
            _ => Err(conns.len()),
        }
    }

    /// A stream's worth of room on some connection: an open one, a new
    /// one, or the first to free a stream.
    async fn checkout(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
    ) -> Result<(SendRequest<BoxBody>, StreamGuard), H2Error> {
        loop {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            let open = match self.pick() {
                Ok(found) => return Ok(found),
                Err(open) => open,
            };
            if open < MAX_CONNECTIONS {
                let _dialing = self.dialing.lock().await;
                // Another dial may have made room meanwhile.
                match self.pick() {
                    Ok(found) => return Ok(found),
                    Err(open) if open < MAX_CONNECTIONS => {
                        let (send, shared) = self.dial(authority, connect_timeout).await?;
                        let guard = StreamGuard::open(&shared);
                        self.lock().push(Conn {
                            send: send.clone(),
                            shared,
                        });
                        return Ok((send, guard));
                    }
                    Err(_) => {}
                }
            }
            // Every connection is full: wait for a stream to end.
            freed.await;
        }
    }

    async fn dial(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
    ) -> Result<(SendRequest<BoxBody>, Arc<Shared>), H2Error> {
        let conn = client::connect(authority, self.tls.as_ref(), connect_timeout)
            .await
            .map_err(H2Error::Connect)?;
        let (stream, _) = conn.into_io();
        if let Stream::Tls(tls) = &stream
            && tls.get_ref().1.alpn_protocol() != Some(b"h2")
        {
            return Err(H2Error::NoAlpn);
        }
        let shared = Arc::new(Shared {
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            freed: self.freed.clone(),
        });
        let stream = GoawayWatch {
            inner: stream,
            shared: shared.clone(),
            header: [0; 9],
            have: 0,
            skip: 0,
        };
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .adaptive_window(true);
        let handshake = builder.handshake::<_, BoxBody>(TokioIo::new(stream));
        let (send, connection) = tokio::time::timeout(connect_timeout, handshake)
            .await
            .map_err(|_| {
                H2Error::Connect(UpstreamError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no HTTP/2 handshake within the connect timeout",
                )))
            })?
            .map_err(H2Error::Failed)?;
        shared
            .max
            .store(connection.current_max_send_streams(), Relaxed);
        let published = shared.clone();
        let target = authority.to_string();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = std::future::poll_fn(|cx| {
                let polled = connection.as_mut().poll(cx);
                published
                    .max
                    .store(connection.current_max_send_streams(), Relaxed);
                polled
            })
            .await;
            published.close();
            if let Err(e) = ended {
                tracing::debug!(backend = %target, "HTTP/2 connection ended: {e}");
            }
        });
        Ok((send, shared))
    }

    /// Sends `request` on a pooled stream; the guard counts the stream
    /// until the response body is done with it. A request a closing
    /// connection hands back unsent (its body untouched) goes on another.
    pub async fn send(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
        mut request: Request<BoxBody>,
    ) -> Result<(Response<Incoming>, StreamGuard), H2Error> {
        for _ in 0..MAX_CONNECTIONS * 2 {
            let (mut send, guard) = self.checkout(authority, connect_timeout).await?;
            match send.try_send_request(request).await {
                Ok(response) => return Ok((response, guard)),
                Err(mut e) => {
                    let unsent = e.take_message();
                    let e = e.into_error();
                    if refused(&e) {
                        // Told to go away: no new stream on this connection.
                        guard.0.close();
                    }
                    match unsent {
                        Some(back) => request = back,
                        None if refused(&e) => return Err(H2Error::Refused(e)),
                        None => return Err(H2Error::Failed(e)),
                    }
                }
            }
        }
        Err(H2Error::Request(
            "every connection to the backend closed before the request could be sent".into(),
        ))
    }
}

/// A backend connection read through for GOAWAY frames. hyper tells of a
/// GOAWAY only when its dispatch task winds down, and a request sent to
/// the connection meanwhile may be refused or lost with the connection;
/// seeing the frame's bytes arrive, the pool stops choosing the
/// connection at once. A graceful GOAWAY (RFC 9113 §6.8: the last stream
/// id at its maximum, then a PING) then covers every stream already sent.
struct GoawayWatch {
    inner: Stream,
    shared: Arc<Shared>,
    /// The frame header being read, and how much of it is here.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
}

/// The HTTP/2 frame type GOAWAY.
const GOAWAY: u8 = 0x7;

impl GoawayWatch {
    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                let h = self.header;
                if h[3] == GOAWAY {
                    self.shared.close();
                }
                self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                self.have = 0;
            }
        }
    }
}

impl tokio::io::AsyncRead for GoawayWatch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        this.scan(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for GoawayWatch {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether the backend never processed the stream: refused by GOAWAY or
/// `REFUSED_STREAM`, or never sent because the connection was closing.
fn refused(e: &hyper::Error) -> bool {
    if e.is_canceled() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// Fields that belong to one HTTP/1.1 connection and must not appear in
/// HTTP/2 (RFC 9113 §8.2.2).
fn connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// The HTTP/2 form of a request head the proxy prepared for HTTP/1.1: the
/// same normalized authority as `:authority`, the same fields but the
/// connection-specific ones (`TE` only as `trailers`), and the lines the
/// proxy adds.
pub fn to_h2(
    out: &Outbound,
    tls: bool,
    body: Option<BoxBody>,
) -> Result<Request<BoxBody>, H2Error> {
    let parts = &out.parts;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut uri = http::Uri::builder()
        .scheme(if tls { Scheme::HTTPS } else { Scheme::HTTP })
        .path_and_query(if path.is_empty() { "/".into() } else { path });
    if let Some(a) = parts.uri.authority() {
        uri = uri.authority(a.clone());
    }
    let uri = uri.build().map_err(|e| H2Error::Request(e.to_string()))?;
    let mut request = Request::new(body.unwrap_or_else(empty_body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    let headers = request.headers_mut();
    let keep = |name: &HeaderName, value: &HeaderValue| {
        !connection_specific(name)
            && (name != header::TE || value.as_bytes().eq_ignore_ascii_case(b"trailers"))
    };
    for (name, value) in &parts.headers {
        if is_managed(name) || (out.replaced)(name) || !keep(name, value) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    for line in out.added.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        if keep(&name, &value) {
            headers.append(name, value);
        }
    }
    Ok(request)
}

pin_project_lite::pin_project! {
    /// A body that holds `guard` until its last frame (or until dropped).
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Guarded {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B, G> http_body::Body for Guarded<B, G>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        // An HTTP/2 writer stops at `is_end_stream` without polling for the
        // end: that is the end too.
        if !matches!(&polled, Some(Ok(_))) || this.inner.is_end_stream() {
            this.guard.take();
        }
        Poll::Ready(polled.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_goaway_frame_is_seen_wherever_the_reads_split_it() {
        // SETTINGS (6 bytes of payload), then GOAWAY (8 bytes).
        let mut wire = vec![0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        wire.extend_from_slice(&[
            0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        for split in 1..wire.len() {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _peer = listener.accept().await.expect("accept");
            let shared = Arc::new(Shared {
                active: AtomicUsize::new(0),
                max: AtomicUsize::new(1),
                closed: AtomicBool::new(false),
                freed: Arc::default(),
            });
            let mut watch = GoawayWatch {
                inner: Stream::Plain(tcp),
                shared: shared.clone(),
                header: [0; 9],
                have: 0,
                skip: 0,
            };
            watch.scan(&wire[..split]);
            assert_eq!(shared.closed.load(Relaxed), split >= 24, "split at {split}");
            watch.scan(&wire[split..]);
            assert!(shared.closed.load(Relaxed), "split at {split}");
        }
    }

    #[test]
    fn heads_lose_connection_fields_and_keep_the_authority() {
        let req = Request::post("http://app.example/rpc?x=1")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("connection", "keep-alive")
            .header("keep-alive", "timeout=5")
            .body(())
            .expect("request");
        let out = Outbound {
            parts: req.into_parts().0,
            added: b"x-forwarded-for: 10.0.0.1\r\nvia: 1.1 switchyard\r\nte: gzip\r\n".to_vec(),
            replaced: |_| false,
        };
        let h2 = to_h2(&out, false, None).expect("converted");
        assert_eq!(h2.uri(), "http://app.example/rpc?x=1");
        assert_eq!(h2.version(), Version::HTTP_2);
        let h = h2.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h.get_all("te").iter().collect::<Vec<_>>(), ["trailers"]);
        assert!(h.get("connection").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["via"], "1.1 switchyard");
    }
}
