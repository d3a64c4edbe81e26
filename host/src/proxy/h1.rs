//! The client side of HTTP/1.1: one connection, served in its own task.
//!
//! A lean server loop instead of a general-purpose HTTP library: read a
//! request head into the connection's buffer, parse it in place (names and
//! values share one frozen copy of the head), hand the request to the
//! [`ProxyService`], and write the response head and the first body bytes
//! with one vectored write. The header-read timeout is one timer per
//! connection, moved forward per request (which costs an atomic store, not
//! a timer-wheel insertion), and the `Date` header is formatted once a
//! second. A connection that starts with the HTTP/2 preface is handed to
//! hyper's HTTP/2 server.
//!
//! Rules (RFC 9112): a request with both `Transfer-Encoding` and
//! `Content-Length`, a transfer coding other than final `chunked`, a
//! `Transfer-Encoding` in HTTP/1.0 or a bad `Content-Length` is refused with
//! 400 and the connection closed; a head larger than
//! `limits.max_header_bytes` gets 431; a head not complete within
//! `timeouts.header_read` (also the keep-alive idle limit) gets 408. A
//! request body left unread when the response is done (an early error, a
//! cache hit) ends the connection after a short lingering read, so that the
//! client still sees the response. `Expect: 100-continue` is answered when
//! the body is first read. Responses of unknown length are chunked to
//! HTTP/1.1 clients and close-delimited to HTTP/1.0 ones.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, request};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, watch};

use super::decode::{BodySource, Decoder, FramedBody, poll_fill};
use super::upstream::{Span, header_map, lists_token, record_spans};
use super::{BoxError, ProxyBody, ProxyError, ProxyService, empty_body};

/// Most header lines a request may have.
const MAX_HEADERS: usize = 100;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long, and how much, a closing connection keeps reading an unread
/// request body so that the client sees the response before the close.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
/// Body pieces gathered for one vectored write, at most (a chunk is three).
const MAX_PENDING: usize = 32;

/// What a connection needs from the config, read once when it is accepted.
#[derive(Clone)]
pub struct Settings {
    pub header_read: Duration,
    pub max_header_bytes: usize,
    pub h2: Arc<hyper::server::conn::http2::Builder<TokioExecutor>>,
}

/// The client connection's reading side and its buffer; lent to a request
/// body while the body is read.
struct Reader {
    half: OwnedReadHalf,
    buf: BytesMut,
    /// Scratch space for parsing request heads.
    spans: Vec<Span>,
}

/// A request head parsed off the buffer.
struct Head {
    parts: request::Parts,
    body: Option<Decoder>,
    keep_alive: bool,
    expect_continue: bool,
}

/// What waiting for a request head ended with.
enum Event {
    Request(Box<Head>),
    Http2,
    /// The client closed the connection (or it failed) between requests.
    Closed,
    TimedOut,
    Stopped,
    TooLarge,
    Invalid(&'static str),
}

/// Serves one client connection until it closes, times out, or `stop` is
/// set (then after the response in progress).
pub async fn serve(
    stream: TcpStream,
    service: ProxyService,
    settings: Settings,
    stop: watch::Receiver<bool>,
) {
    let (half, mut writer) = stream.into_split();
    let mut reader = Some(Reader {
        half,
        buf: BytesMut::with_capacity(8 * 1024),
        spans: Vec::with_capacity(32),
    });
    let mut out = Vec::with_capacity(1024);
    let mut pending = Vec::with_capacity(MAX_PENDING + 3);
    let timer = tokio::time::sleep(settings.header_read);
    tokio::pin!(timer);
    let mut stop_wait = stop.clone();
    let stopped = stop_wait.changed();
    tokio::pin!(stopped);
    let mut first = true;
    while let Some(mut r) = reader.take() {
        if *stop.borrow() {
            return;
        }
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + settings.header_read);
        let event = poll_fn(|cx| {
            poll_head(
                &mut r,
                cx,
                timer.as_mut(),
                stopped.as_mut(),
                first,
                settings.max_header_bytes,
            )
        })
        .await;
        first = false;
        let head = match event {
            Event::Request(head) => head,
            Event::Http2 => return serve_h2(r, writer, service, &settings, stop).await,
            Event::Closed | Event::Stopped => return,
            Event::TimedOut => {
                if !r.buf.is_empty() {
                    let _ = write_error(&mut writer, StatusCode::REQUEST_TIMEOUT, "").await;
                }
                return;
            }
            Event::TooLarge => {
                let e = ProxyError::HeadersTooLarge {
                    limit: settings.max_header_bytes,
                };
                let _ = write_local(&mut writer, &mut out, e.into_response()).await;
                return linger(r, writer).await;
            }
            Event::Invalid(why) => {
                tracing::debug!("malformed request: {why}");
                let _ = write_error(&mut writer, StatusCode::BAD_REQUEST, why).await;
                return linger(r, writer).await;
            }
        };
        let received = Instant::now();
        let Head {
            parts,
            body,
            keep_alive,
            expect_continue,
        } = *head;
        let facts = Facts {
            head: parts.method == Method::HEAD,
            http10: parts.version == Version::HTTP_10,
            keep_alive,
            received,
        };
        let (body, lent) = match body {
            None => {
                reader = Some(r);
                (empty_body(), None)
            }
            Some(decoder) => {
                let (tx, rx) = oneshot::channel();
                let end = ClientEnd {
                    reader: Some(r),
                    back: Some(tx),
                    expect_continue,
                };
                (FramedBody::new(end, decoder).boxed_unsync(), Some(rx))
            }
        };
        let response = match service
            .dispatch(Request::from_parts(parts, body), received)
            .await
        {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let keep = match write_response(&mut writer, &mut out, &mut pending, response, &facts).await
        {
            Ok(keep) => keep,
            Err(e) => {
                tracing::debug!("response to the client failed: {e}");
                return;
            }
        };
        if let Some(mut rx) = lent {
            match rx.try_recv() {
                Ok((r, true)) => reader = Some(r),
                Ok((r, false)) => return linger(r, writer).await,
                // The body still lives somewhere: the stream position is unknown.
                Err(_) => return,
            }
        }
        if !keep {
            return;
        }
    }
}

/// Reads until a request head is complete, or something else happens.
fn poll_head(
    r: &mut Reader,
    cx: &mut Context<'_>,
    timer: Pin<&mut tokio::time::Sleep>,
    stopped: Pin<&mut impl Future>,
    first: bool,
    max_head: usize,
) -> Poll<Event> {
    loop {
        if first && H2_PREFACE.starts_with(&r.buf[..r.buf.len().min(H2_PREFACE.len())]) {
            if r.buf.len() >= H2_PREFACE.len() {
                return Poll::Ready(Event::Http2);
            }
        } else if !r.buf.is_empty() {
            match parse_request(&mut r.buf, &mut r.spans) {
                Ok(Some(head)) => return Poll::Ready(Event::Request(Box::new(head))),
                Ok(None) if r.buf.len() > max_head => return Poll::Ready(Event::TooLarge),
                Ok(None) => {}
                Err(RequestError::TooLarge) => return Poll::Ready(Event::TooLarge),
                Err(RequestError::Invalid(why)) => return Poll::Ready(Event::Invalid(why)),
            }
        }
        match poll_fill(&mut r.half, &mut r.buf, cx) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Closed),
            Poll::Ready(Ok(_)) => continue,
            Poll::Pending => {
                if timer.poll(cx).is_ready() {
                    return Poll::Ready(Event::TimedOut);
                }
                if r.buf.is_empty() && stopped.poll(cx).is_ready() {
                    return Poll::Ready(Event::Stopped);
                }
                return Poll::Pending;
            }
        }
    }
}

enum RequestError {
    TooLarge,
    Invalid(&'static str),
}

/// Parses a complete request head off the front of `buf`; `Ok(None)`: more
/// bytes are needed.
fn parse_request(buf: &mut BytesMut, spans: &mut Vec<Span>) -> Result<Option<Head>, RequestError> {
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooLarge),
        Err(_) => return Err(RequestError::Invalid("malformed request head")),
    };
    let base = buf.as_ptr() as usize;
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| RequestError::Invalid("bad method"))?;
    let path = req.path.unwrap_or_default();
    let path_at = path.as_ptr() as usize - base;
    let path_range = path_at..path_at + path.len();
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    record_spans(req.headers, base, spans);
    let (mut close, mut keep, mut chunked, mut other_te, mut length, mut expect) =
        (false, false, false, false, None, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            close |= lists_token(h.value, "close");
            keep |= lists_token(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim);
            chunked = last.is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
            other_te |= !chunked;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for part in h.value.split(|b| *b == b',') {
                let n = std::str::from_utf8(part)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .ok_or(RequestError::Invalid("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(RequestError::Invalid("conflicting content-length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect = lists_token(h.value, "100-continue");
        }
    }
    let body = match (chunked || other_te, length) {
        (true, _) if version == Version::HTTP_10 => {
            return Err(RequestError::Invalid("transfer-encoding in HTTP/1.0"));
        }
        (true, Some(_)) => {
            return Err(RequestError::Invalid(
                "both transfer-encoding and content-length",
            ));
        }
        (true, None) if other_te => {
            return Err(RequestError::Invalid("unsupported transfer-encoding"));
        }
        (true, None) => Some(Decoder::ChunkSize),
        (false, Some(0) | None) => None,
        (false, Some(n)) => Some(Decoder::Length(n)),
    };
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_range))
        .map_err(|_| RequestError::Invalid("bad request target"))?;
    // No spare room: the forwarded headers are appended by the encoder.
    let headers = header_map(&head, spans, 0).map_err(|_| RequestError::Invalid("bad header"))?;
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        body,
        keep_alive: if version == Version::HTTP_10 {
            keep && !close
        } else {
            !close
        },
        expect_continue: expect && version == Version::HTTP_11,
    }))
}

/// The client connection a request body reads from. The reader goes back
/// to the connection when the body ends, or when it is dropped (then marked
/// incomplete).
struct ClientEnd {
    reader: Option<Reader>,
    back: Option<oneshot::Sender<(Reader, bool)>>,
    expect_continue: bool,
}

impl ClientEnd {
    fn give_back(&mut self, complete: bool) {
        if let (Some(r), Some(tx)) = (self.reader.take(), self.back.take()) {
            let _ = tx.send((r, complete));
        }
    }
}

impl Drop for ClientEnd {
    fn drop(&mut self) {
        self.give_back(false);
    }
}

impl BodySource for ClientEnd {
    type Io = OwnedReadHalf;

    fn io(&mut self) -> Option<(&mut OwnedReadHalf, &mut BytesMut)> {
        self.reader.as_mut().map(|r| (&mut r.half, &mut r.buf))
    }

    fn poll_start(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let (true, Some(r)) = (self.expect_continue, self.reader.as_ref()) else {
            return Poll::Ready(Ok(()));
        };
        // 25 bytes into an idle connection's send buffer.
        let line = b"HTTP/1.1 100 Continue\r\n\r\n";
        loop {
            ready!(r.half.as_ref().poll_write_ready(cx))?;
            match r.half.as_ref().try_write(line) {
                Ok(n) if n == line.len() => break,
                Ok(_) => return Poll::Ready(Err("short 100 Continue write".into())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        self.expect_continue = false;
        Poll::Ready(Ok(()))
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
}

/// Writes a response; `Ok(true)`: the connection can carry another request.
async fn write_response(
    writer: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
    pending: &mut Vec<Bytes>,
    response: Response<ProxyBody>,
    req: &Facts,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
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
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if bodyless || length == Some(0) {
        writer.write_all(out).await?;
        return Ok(keep);
    }
    // Pieces not yet written, after the head in `out`.
    pending.clear();
    let mut head_written = false;
    let mut sent = 0u64;
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
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
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
        pending.push(Bytes::from_static(b"0\r\n\r\n"));
    }
    flush(writer, out, &mut head_written, pending).await?;
    // A body shorter than it declared leaves the client waiting: close.
    Ok(keep && length.is_none_or(|n| n == sent))
}

/// Writes the head (once) and the pending pieces in one vectored write.
async fn flush(
    writer: &mut OwnedWriteHalf,
    head: &[u8],
    head_written: &mut bool,
    pending: &mut Vec<Bytes>,
) -> io::Result<()> {
    let mut slices = [IoSlice::new(&[]); MAX_PENDING + 4];
    let mut n = 0;
    if !*head_written {
        slices[0] = IoSlice::new(head);
        n = 1;
    }
    for piece in pending.iter() {
        slices[n] = IoSlice::new(piece);
        n += 1;
    }
    let mut rest = &mut slices[..n];
    while !rest.is_empty() {
        let n = writer.write_vectored(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    *head_written = true;
    pending.clear();
    Ok(())
}

/// A response the proxy makes itself before any request reached the stack.
async fn write_local(
    writer: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
    mut response: Response<ProxyBody>,
) -> io::Result<bool> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let facts = Facts {
        head: false,
        http10: false,
        keep_alive: false,
        received: Instant::now(),
    };
    write_response(writer, out, &mut Vec::new(), response, &facts).await
}

async fn write_error(
    writer: &mut OwnedWriteHalf,
    status: StatusCode,
    why: &str,
) -> io::Result<bool> {
    let text = format!(
        "{} {}{}{why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        if why.is_empty() { "" } else { ": " }
    );
    let mut response = Response::new(super::text_body(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    write_local(writer, &mut Vec::new(), response).await
}

/// Closes a connection whose client may still be sending: stop writing,
/// then read and discard for a moment, so that the close does not reset
/// the connection before the client has read the response.
async fn linger(mut r: Reader, mut writer: OwnedWriteHalf) {
    let _ = writer.shutdown().await;
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
async fn serve_h2(
    r: Reader,
    writer: OwnedWriteHalf,
    service: ProxyService,
    settings: &Settings,
    mut stop: watch::Receiver<bool>,
) {
    let stream = match r.half.reunite(writer) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("cannot reunite the connection: {e}");
            return;
        }
    };
    let io = Rewind {
        prefix: r.buf.freeze(),
        inner: stream,
    };
    let conn = settings.h2.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP/2 connection ended: {e}");
    }
}

/// A stream that first yields bytes already read from it.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
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

impl AsyncWrite for Rewind {
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

/// Decimal digits of `n`, written into `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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

    fn parse(raw: &str) -> Result<Option<Head>, RequestError> {
        parse_request(&mut BytesMut::from(raw), &mut Vec::new())
    }

    fn refusal(raw: &str) -> &'static str {
        match parse(raw) {
            Err(RequestError::Invalid(why)) => why,
            Err(RequestError::TooLarge) => "too large",
            Ok(_) => "accepted",
        }
    }

    #[test]
    fn heads_frame_bodies_as_rfc_9112_says() {
        let h = parse("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .ok()
            .flatten()
            .expect("complete");
        assert_eq!(h.parts.uri, "/a?b=1");
        assert_eq!(h.body, Some(Decoder::Length(5)));
        assert!(h.keep_alive);
        let h = parse(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
        )
        .ok()
        .flatten()
        .expect("complete");
        assert_eq!(h.body, Some(Decoder::ChunkSize));
        assert!(h.expect_continue);
        let h = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .ok()
            .flatten()
            .expect("complete");
        assert!(h.keep_alive && h.body.is_none());
        let h = parse("GET / HTTP/1.0\r\n\r\n")
            .ok()
            .flatten()
            .expect("complete");
        assert!(!h.keep_alive);
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            "both transfer-encoding and content-length"
        );
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            "conflicting content-length values"
        );
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            "bad content-length"
        );
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            "unsupported transfer-encoding"
        );
        assert_eq!(
            refusal("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "transfer-encoding in HTTP/1.0"
        );
        assert_eq!(
            refusal("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"),
            "malformed request head"
        );
    }

    #[test]
    fn dates_and_digits() {
        let mut out = Vec::new();
        append_date(&mut out, Instant::now());
        assert_eq!(out.len(), 29, "{}", String::from_utf8_lossy(&out));
        assert!(out.ends_with(b" GMT"));
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(1234567890, &mut [0; 20]), b"1234567890");
    }
}
