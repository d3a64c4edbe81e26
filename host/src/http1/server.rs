//! The server side of HTTP/1.1: one client connection, served in its own
//! task.
//!
//! A lean server loop instead of a general-purpose HTTP library: read a
//! request head into the connection's buffer, parse it in place into the
//! normalized head (see [`super::request`]), hand the request to the
//! [`Handler`], and write the response head and the first body bytes with
//! one vectored write. The header-read timeout is one timer per connection,
//! moved forward per request (which costs an atomic store, not a
//! timer-wheel insertion), and the `Date` header is formatted once a
//! second. A connection that starts with the HTTP/2 preface is handed to
//! hyper's HTTP/2 server.
//!
//! What is refused and how is in [`super::request`] and [`super::rules`]:
//! the refusal's status (400, 501, 505) is answered and the connection
//! closed; a head larger than `limits.max_header_bytes` gets 431; a head
//! not complete within `timeouts.header_read` (also the keep-alive idle
//! limit) gets 408. A request body left unread when the response is done
//! (an early error, a cache hit) ends the connection after a short
//! lingering read, so that the client still sees the response.
//! `Expect: 100-continue` is answered when the body is first read.
//! Responses are framed from their body's known length, or chunked to
//! HTTP/1.1 clients and close-delimited to HTTP/1.0 ones; a response's own
//! `Content-Length` or `Transfer-Encoding` is never copied.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::body::{BodySource, FramedBody, poll_fill};
use super::encode::itoa;
use super::request::{KnownHost, Origin, RequestError, RequestHead, parse_request};
use super::rules::lists_token;
use super::scratch::{MAX_PENDING, WriteSpace, read_buffer, rest};
use super::tunnel::{UpgradeRequested, UpgradeSlot, Upgraded};
use super::{BoxBody, BoxError, empty_body};

/// What serves the requests of a connection. It is also a hyper service,
/// for connections that turn out to speak HTTP/2.
pub trait Handler:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<BoxBody>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The future of one request.
    type Future: Future<Output = Response<BoxBody>>;
    /// Serves one request, received at `received`. Its head is normalized.
    fn handle(&self, request: Request<BoxBody>, received: Instant) -> <Self as Handler>::Future;
}

/// A client connection the server loop can serve: split into a reading and
/// a writing half used apart (a request body reads while the loop waits to
/// write), and put back together for HTTP/2 with prior knowledge. A plain
/// TCP stream splits without a lock; anything else (TLS) through
/// [`Shared`].
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    type Read: AsyncRead + Send + Unpin + 'static;
    type Write: AsyncWrite + Send + Unpin + 'static;
    fn split(self) -> (Self::Read, Self::Write);
    fn unsplit(read: Self::Read, write: Self::Write) -> Option<Self>
    where
        Self: Sized;
    /// Whether the reading half has bytes, without a buffer to read them
    /// into; ready when it cannot tell.
    fn poll_read_ready(_read: &Self::Read, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Transport for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }

    fn unsplit(read: OwnedReadHalf, write: OwnedWriteHalf) -> Option<Self> {
        read.reunite(write).ok()
    }

    fn poll_read_ready(read: &OwnedReadHalf, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        read.as_ref().poll_read_ready(cx)
    }
}

/// Any stream (TLS over TCP), split with tokio's shared halves.
pub struct Shared<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for Shared<T> {
    type Read = tokio::io::ReadHalf<T>;
    type Write = tokio::io::WriteHalf<T>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self.0)
    }

    fn unsplit(read: Self::Read, write: Self::Write) -> Option<Self> {
        Some(Shared(read.unsplit(write)))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Shared<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Shared<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long, and how much, a closing connection keeps reading an unread
/// request body so that the client sees the response before the close.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// What a connection needs from the config, read once when it is accepted.
#[derive(Clone)]
pub struct Settings {
    pub header_read: Duration,
    pub max_header_bytes: usize,
    pub h2: Arc<hyper::server::conn::http2::Builder<TokioExecutor>>,
}

const REQUEST_TOO_LARGE: &str = "request headers too large";

/// Tells a listener's connections to finish: set once, seen by all. Idle
/// connections close at once; busy ones after the response in progress.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<ShutdownState>);

#[derive(Debug, Default)]
struct ShutdownState {
    set: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.0.set.store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.0.set.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub async fn wait(&self) {
        // Made before the check: a trigger in between still wakes it.
        let notified = self.0.notify.notified();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

/// The client connection's reading side and its buffer; lent to a request
/// body while the body is read.
struct Reader<R> {
    half: R,
    /// Freed while the connection is idle.
    buf: BytesMut,
    /// The connection's usual `Host`, checked once.
    host: KnownHost,
}

/// What waiting for a request head ended with.
enum Event {
    Request(Box<RequestHead>),
    Http2,
    /// The client closed the connection (or it failed) between requests.
    Closed,
    TimedOut,
    Stopped,
    Refused(RequestError),
}

/// Serves one client connection until it closes, times out, or `stop` is
/// set (then after the response in progress). `origin` says what the
/// connection's requests are for when they do not say.
///
/// Between requests a connection holds no buffer (see `super::scratch`),
/// and the work of a request lives in one allocation made for it: an idle
/// connection costs its task, its socket and its timer.
pub async fn serve<H: Handler, T: Transport>(
    stream: T,
    service: H,
    settings: Settings,
    origin: Origin,
    shutdown: Shutdown,
) {
    let (half, mut writer) = stream.split();
    let mut r = Reader {
        half,
        buf: BytesMut::new(),
        host: KnownHost::default(),
    };
    let timer = tokio::time::sleep(settings.header_read);
    tokio::pin!(timer);
    let stopped = shutdown.0.notify.notified();
    tokio::pin!(stopped);
    let mut first = true;
    loop {
        if shutdown.is_set() {
            return;
        }
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + settings.header_read);
        let event = poll_fn(|cx| {
            poll_head::<T>(
                &mut r,
                cx,
                timer.as_mut(),
                stopped.as_mut(),
                first,
                settings.max_header_bytes,
                &origin,
            )
        })
        .await;
        first = false;
        let head = match event {
            Event::Request(head) => head,
            Event::Http2 => {
                let h2 = serve_h2::<H, T>(r, writer, service, &settings, shutdown.clone());
                return Box::pin(h2).await;
            }
            Event::Closed | Event::Stopped => return,
            Event::TimedOut => {
                if !r.buf.is_empty() {
                    let status = StatusCode::REQUEST_TIMEOUT;
                    let _ = Box::pin(write_error(&mut writer, status, "")).await;
                }
                return;
            }
            Event::Refused(e) => {
                let (status, why) = match e {
                    RequestError::TooLarge => (
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        REQUEST_TOO_LARGE,
                    ),
                    RequestError::Refused(refusal) => (refusal.status, refusal.reason),
                };
                tracing::debug!("request refused: {status} {why}");
                let refuse = async {
                    let _ = write_error(&mut writer, status, why).await;
                    linger(r, &mut writer).await;
                };
                return Box::pin(refuse).await;
            }
        };
        r = match Box::pin(exchange(&service, &mut writer, r, head)).await {
            Some(next) => next,
            None => return,
        };
    }
}

/// One request: handed to the service, its response written. Returns the
/// reader when the connection may carry another request.
async fn exchange<H: Handler, R, W>(
    service: &H,
    writer: &mut W,
    r: Reader<R>,
    head: Box<RequestHead>,
) -> Option<Reader<R>>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    let received = Instant::now();
    let RequestHead {
        mut parts,
        body,
        keep_alive,
        expect_continue,
        upgrade,
        trailers,
    } = *head;
    if upgrade {
        parts.extensions.insert(UpgradeRequested);
    }
    let facts = Facts {
        head: parts.method == Method::HEAD,
        http10: parts.version == Version::HTTP_10,
        keep_alive,
        received,
        trailers,
    };
    // `Expect: 100-continue`: the body asks for it when first read, and
    // this loop, which owns the writing side, sends it.
    let ask = (expect_continue && body.is_some()).then(|| Arc::new(Continue::default()));
    let (body, mut reader, lent) = match body {
        None => (empty_body(), Some(r), None),
        Some(decoder) => {
            let (tx, rx) = oneshot::channel();
            let end = ClientEnd {
                reader: Some(r),
                back: Some(tx),
                ask: ask.clone(),
            };
            (FramedBody::new(end, decoder).boxed_unsync(), None, Some(rx))
        }
    };
    let handled = service.handle(Request::from_parts(parts, body), received);
    let response = match ask {
        None => handled.await,
        // Boxed: the rare path does not grow every request's future.
        Some(ask) => Box::pin(answering_continue(handled, &ask, writer)).await,
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let (Some(r), Some(slot)) = (reader.take(), response.extensions().get::<UpgradeSlot>())
        && let Some(up) = slot.take()
    {
        // Boxed: only upgraded connections carry the tunnel's state.
        return Box::pin(switch(r, writer, response, &facts, up)).await;
    }
    let written = write_response(writer, &mut WriteSpace::new(), response, &facts).await;
    let keep = match written {
        Ok(keep) => keep,
        Err(e) => {
            tracing::debug!("response to the client failed: {e}");
            return None;
        }
    };
    if let Some(mut rx) = lent {
        match rx.try_recv() {
            Ok((r, true)) => reader = Some(r),
            Ok((r, false)) => {
                // Rare: boxed, so its timer does not sit in every request.
                Box::pin(linger(r, writer)).await;
                return None;
            }
            // The body still lives somewhere: the stream position is unknown.
            Err(_) => return None,
        }
    }
    reader.filter(|_| keep)
}

/// Writes the `101` and runs the tunnel until it closes; the connection
/// carries nothing after it.
async fn switch<R, W>(
    r: Reader<R>,
    writer: &mut W,
    response: Response<BoxBody>,
    facts: &Facts,
    up: Upgraded,
) -> Option<Reader<R>>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    if let Err(e) = write_response(writer, &mut WriteSpace::new(), response, facts).await {
        tracing::debug!("writing 101 to the client failed: {e}");
        (up.done)(super::tunnel::TunnelStats {
            to_backend: 0,
            to_client: 0,
            duration: Duration::ZERO,
            ended_by: "error",
        });
        return None;
    }
    super::tunnel::run(r.half, r.buf, writer, up).await;
    None
}

/// Reads until a request head is complete, or something else happens.
fn poll_head<T: Transport>(
    r: &mut Reader<T::Read>,
    cx: &mut Context<'_>,
    timer: Pin<&mut tokio::time::Sleep>,
    stopped: Pin<&mut impl Future>,
    first: bool,
    max_head: usize,
    origin: &Origin,
) -> Poll<Event> {
    loop {
        if first && H2_PREFACE.starts_with(&r.buf[..r.buf.len().min(H2_PREFACE.len())]) {
            if r.buf.len() >= H2_PREFACE.len() {
                return Poll::Ready(Event::Http2);
            }
        } else if !r.buf.is_empty() {
            match parse_request(&mut r.buf, origin, &mut r.host) {
                Ok(Some(head)) => return Poll::Ready(Event::Request(Box::new(head))),
                Ok(None) if r.buf.len() > max_head => {
                    return Poll::Ready(Event::Refused(RequestError::TooLarge));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Event::Refused(e)),
            }
        }
        // Idle: wait for the socket to have bytes before holding a buffer.
        let filled = if r.buf.capacity() == 0 {
            match T::poll_read_ready(&r.half, cx) {
                Poll::Ready(Ok(())) => {
                    r.buf = read_buffer();
                    poll_fill(&mut r.half, &mut r.buf, cx)
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        } else {
            poll_fill(&mut r.half, &mut r.buf, cx)
        };
        match filled {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Closed),
            Poll::Ready(Ok(_)) => continue,
            Poll::Pending => {
                if timer.poll(cx).is_ready() {
                    return Poll::Ready(Event::TimedOut);
                }
                if r.buf.is_empty() && stopped.poll(cx).is_ready() {
                    return Poll::Ready(Event::Stopped);
                }
                // Nothing more to read now: the buffer is freed, unless
                // part of a head waits in it.
                rest(&mut r.buf);
                return Poll::Pending;
            }
        }
    }
}

/// A request's `100 Continue`: asked for by the body when it is first read,
/// sent by the connection loop.
#[derive(Default)]
struct Continue {
    state: AtomicU8,
    /// The loop, waiting for the response, learns of the ask.
    loop_waker: AtomicWaker,
    /// The body, waiting to read, learns it was sent.
    body_waker: AtomicWaker,
}

const NOT_ASKED: u8 = 0;
const ASKED: u8 = 1;
const SENT: u8 = 2;
const FAILED: u8 = 3;

/// Polls the response future, sending `100 Continue` when the body asks.
async fn answering_continue<F: Future, W: AsyncWrite + Unpin>(
    handled: F,
    ask: &Continue,
    writer: &mut W,
) -> F::Output {
    let mut handled = std::pin::pin!(handled);
    loop {
        let step = poll_fn(|cx| {
            ask.loop_waker.register(cx.waker());
            if ask.state.load(SeqCst) == ASKED {
                return Poll::Ready(None);
            }
            handled.as_mut().poll(cx).map(Some)
        })
        .await;
        match step {
            Some(response) => return response,
            None => {
                // 25 bytes into an idle connection's send buffer.
                let mut sent = writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                if sent.is_ok() {
                    sent = writer.flush().await;
                }
                ask.state
                    .store(if sent.is_ok() { SENT } else { FAILED }, SeqCst);
                ask.body_waker.wake();
            }
        }
    }
}

/// The client connection a request body reads from. The reader goes back
/// to the connection when the body ends, or when it is dropped (then marked
/// incomplete).
struct ClientEnd<R> {
    reader: Option<Reader<R>>,
    back: Option<oneshot::Sender<(Reader<R>, bool)>>,
    ask: Option<Arc<Continue>>,
}

impl<R> ClientEnd<R> {
    fn give_back(&mut self, complete: bool) {
        if let (Some(r), Some(tx)) = (self.reader.take(), self.back.take()) {
            let _ = tx.send((r, complete));
        }
    }
}

impl<R> Drop for ClientEnd<R> {
    fn drop(&mut self) {
        self.give_back(false);
    }
}

impl<R: AsyncRead + Unpin> BodySource for ClientEnd<R> {
    type Io = R;

    fn io(&mut self) -> Option<(&mut R, &mut BytesMut)> {
        self.reader.as_mut().map(|r| (&mut r.half, &mut r.buf))
    }

    fn poll_start(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let Some(ask) = &self.ask else {
            return Poll::Ready(Ok(()));
        };
        ask.body_waker.register(cx.waker());
        match ask.state.load(SeqCst) {
            SENT => {
                self.ask = None;
                Poll::Ready(Ok(()))
            }
            FAILED => Poll::Ready(Err("could not send 100 Continue".into())),
            NOT_ASKED => {
                ask.state.store(ASKED, SeqCst);
                ask.loop_waker.wake();
                Poll::Pending
            }
            _ => Poll::Pending,
        }
    }

    fn finish(&mut self, complete: bool) {
        self.give_back(complete);
    }
}

/// What the response writer needs to know about the request.
struct Facts {
    head: bool,
    http10: bool,
    keep_alive: bool,
    received: Instant,
    /// The client sent `TE: trailers`: a chunked response carries the
    /// body's trailers (otherwise they are dropped, as RFC 9110 §6.5.1
    /// allows).
    trailers: bool,
}

/// Whether a request's `TE` lists `trailers`.
pub fn accepts_trailers(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .any(|v| lists_token(v.as_bytes(), "trailers"))
}

/// Writes a response; `Ok(true)`: the connection can carry another request.
/// The head is encoded now; the future only streams the body, so it does
/// not carry the head's parts across its waits.
fn write_response<'a, W: AsyncWrite + Unpin>(
    writer: &'a mut W,
    scratch: &'a mut WriteSpace,
    response: Response<BoxBody>,
    req: &Facts,
) -> impl Future<Output = io::Result<bool>> + 'a {
    let (parts, body) = response.into_parts();
    let plan = encode_response_head(&mut scratch.out, parts, &body, req);
    write_body(writer, scratch, body, plan)
}

/// How a response's body goes out, decided with its head.
#[derive(Clone, Copy)]
struct Plan {
    keep: bool,
    bodyless: bool,
    chunked: bool,
    length: Option<u64>,
    /// Trailers are written (chunked, and the client accepts them).
    trailers: bool,
}

/// Encodes a response head into `out`: framing from the body's known
/// length (or chunked, or close-delimited for HTTP/1.0), never from the
/// response's own framing headers.
fn encode_response_head(
    out: &mut Vec<u8>,
    parts: http::response::Parts,
    body: &BoxBody,
    req: &Facts,
) -> Plan {
    let status = parts.status;
    let bodyless = req.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = if bodyless {
        None
    } else {
        body.size_hint().exact()
    };
    let chunked = !bodyless && length.is_none() && !req.http10;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut keep = req.keep_alive && (bodyless || length.is_some() || chunked);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in &parts.headers {
        if name == header::CONNECTION {
            keep &= !lists_token(value.as_bytes(), "close");
            continue;
        }
        // A bodiless answer (HEAD, 304) may say how long the body would
        // be; otherwise the length is written from the body below.
        if name == header::TRANSFER_ENCODING || (name == header::CONTENT_LENGTH && !bodyless) {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa(n, &mut [0u8; 20]));
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        append_date(out, req.received);
        out.extend_from_slice(b"\r\n");
    }
    if switching {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Plan {
        keep,
        bodyless,
        chunked,
        length,
        trailers: chunked && req.trailers,
    }
}

/// Writes the encoded head and streams the body as `plan` says.
async fn write_body<W: AsyncWrite + Unpin>(
    writer: &mut W,
    scratch: &mut WriteSpace,
    mut body: BoxBody,
    plan: Plan,
) -> io::Result<bool> {
    let WriteSpace { out, pending } = scratch;
    let Plan {
        keep,
        bodyless,
        chunked,
        length,
        trailers,
    } = plan;
    if bodyless || length == Some(0) {
        writer.write_all(out).await?;
        // A no-op on TCP; TLS may hold back what the socket did not take.
        writer.flush().await?;
        return Ok(keep);
    }
    // Pieces not yet written, after the head in `out`.
    pending.clear();
    let mut head_written = false;
    let mut sent = 0u64;
    let mut trailer_lines = None;
    loop {
        // Whatever is ready right away goes out in the same write as the head.
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => {
                flush(writer, out, &mut head_written, pending).await?;
                body.frame().await
            }
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(io::Error::other(e)),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(map) = frame.into_trailers()
                    && trailers
                {
                    trailer_lines = Some(encode_trailers(&map));
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if chunked {
            pending.push(Bytes::from(format!("{:x}\r\n", data.len())));
            pending.push(data);
            pending.push(Bytes::from_static(b"\r\n"));
        } else {
            pending.push(data);
        }
        if pending.len() > MAX_PENDING {
            flush(writer, out, &mut head_written, pending).await?;
        }
    }
    if chunked {
        match trailer_lines {
            Some(lines) => pending.push(lines),
            None => pending.push(Bytes::from_static(b"0\r\n\r\n")),
        }
    }
    flush(writer, out, &mut head_written, pending).await?;
    // A body shorter than it declared leaves the client waiting: close.
    Ok(keep && length.is_none_or(|n| n == sent))
}

/// The last chunk with trailer fields, as the chunked coding ends with
/// them; fields that must not trail are left out.
pub fn encode_trailers(map: &http::HeaderMap) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"0\r\n");
    for (name, value) in map {
        if super::body::allowed_in_trailers(name) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Writes the head (once) and the pending pieces in one vectored write.
/// The slices are made on the stack of each poll, from how much has been
/// written, rather than kept in the future: an idle connection's task does
/// not carry room for them.
async fn flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    head: &[u8],
    head_written: &mut bool,
    pending: &mut Vec<Bytes>,
) -> io::Result<()> {
    let head = if *head_written { &[][..] } else { head };
    let total = head.len() + pending.iter().map(Bytes::len).sum::<usize>();
    let mut done = 0;
    while done < total {
        let n = poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_PENDING + 4];
            let mut count = 0;
            let mut skip = done;
            for piece in std::iter::once(head).chain(pending.iter().map(|p| &p[..])) {
                if skip >= piece.len() {
                    skip -= piece.len();
                    continue;
                }
                slices[count] = IoSlice::new(&piece[skip..]);
                skip = 0;
                count += 1;
            }
            Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count])
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    // A no-op on TCP; TLS may hold back what the socket did not take.
    poll_fn(|cx| Pin::new(&mut *writer).poll_flush(cx)).await?;
    *head_written = true;
    pending.clear();
    Ok(())
}

/// A response the proxy makes itself before any request reached the stack.
async fn write_local<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut response: Response<BoxBody>,
) -> io::Result<bool> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let facts = Facts {
        head: false,
        http10: false,
        keep_alive: false,
        received: Instant::now(),
        trailers: false,
    };
    write_response(writer, &mut WriteSpace::new(), response, &facts).await
}

async fn write_error<W: AsyncWrite + Unpin>(
    writer: &mut W,
    status: StatusCode,
    why: &str,
) -> io::Result<bool> {
    write_local(writer, super::error_response(status, why)).await
}

/// Closes a connection whose client may still be sending: stop writing,
/// then read and discard for a moment, so that the close does not reset
/// the connection before the client has read the response.
async fn linger<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(mut r: Reader<R>, writer: &mut W) {
    let _ = writer.shutdown().await;
    if r.buf.capacity() == 0 {
        r.buf = read_buffer();
    }
    let drain = async {
        let mut seen = 0usize;
        loop {
            r.buf.clear();
            match poll_fn(|cx| poll_fill(&mut r.half, &mut r.buf, cx)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen += n,
            }
            if seen > LINGER_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Hands a connection that opened with the HTTP/2 preface to hyper.
async fn serve_h2<H: Handler, T: Transport>(
    r: Reader<T::Read>,
    writer: T::Write,
    service: H,
    settings: &Settings,
    shutdown: Shutdown,
) {
    let Some(stream) = T::unsplit(r.half, writer) else {
        tracing::debug!("cannot put the connection back together for HTTP/2");
        return;
    };
    let io = Rewind {
        prefix: r.buf.freeze(),
        inner: stream,
    };
    serve_h2_on(io, service, settings, shutdown).await;
}

/// Serves HTTP/2 on `io` (after the prior-knowledge preface, or after TLS
/// negotiated `h2`) until it closes or `shutdown` is set.
pub async fn serve_h2_on<H, IO>(io: IO, service: H, settings: &Settings, shutdown: Shutdown)
where
    H: Handler,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let conn = settings.h2.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP/2 connection ended: {e}");
    }
}

/// A stream that first yields bytes already read from it.
struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let bytes = self.prefix.split_to(n);
            buf.put_slice(&bytes);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Appends the HTTP date of `now`, formatted at most once a second.
fn append_date(out: &mut Vec<u8>, now: Instant) {
    thread_local! {
        static DATE: std::cell::RefCell<(Option<Instant>, String)> =
            const { std::cell::RefCell::new((None, String::new())) };
    }
    DATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0.is_none_or(|until| now >= until) {
            let wall = SystemTime::now();
            let into_second = wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            cell.1 = httpdate::fmt_http_date(wall);
            cell.0 = Some(now + Duration::from_secs(1) - Duration::from_nanos(into_second.into()));
        }
        out.extend_from_slice(cell.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        let mut out = Vec::new();
        append_date(&mut out, Instant::now());
        assert_eq!(out.len(), 29, "{}", String::from_utf8_lossy(&out));
        assert!(out.ends_with(b" GMT"));
    }
}
