//! The client side towards backends: a lean HTTP/1.1 client that runs
//! inside the request's own task. Proxied traffic, active health checks
//! and the load generator all go through it.
//!
//! A request future takes a pooled connection (or opens one), writes the
//! request head encoded straight from the borrowed request parts, reads the
//! response head, and hands the connection to the response body, which
//! returns it to the pool after the last byte. No connection task, no
//! channel, no copy of the headers per attempt; retries re-encode the same
//! parts. Pools are per backend address (and TLS settings) and outlive
//! config reloads; a pool knows whether its backend speaks TLS, so a
//! pooled TLS connection is reused exactly like a plain one.

mod body;
mod pool;
mod stream;

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderName;
use http::request;
use http::uri::Authority;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use body::{BackendEnd, UpstreamBody, upstream_body};
pub use pool::ConnPool;
pub use stream::{Stream, TlsTarget};

use super::encode::{BodyFraming, encode_request_head, framing_for};
use super::response::{self, LeanHead, ResponseHead, parse_response_head};
use super::scratch::{head_space, read_buffer, rest};
use super::{BoxBody, BoxError};

/// A request head on its way to a backend: the normalized parts, the
/// header lines the caller adds (already encoded), and which of the parts'
/// own headers those lines replace.
#[derive(Debug)]
pub struct Outbound {
    pub parts: request::Parts,
    pub added: Vec<u8>,
    /// Headers of `parts` left out because `added` replaces them.
    pub replaced: fn(&HeaderName) -> bool,
}

impl Outbound {
    /// A request sent as it is, with nothing added.
    pub fn plain(parts: request::Parts) -> Self {
        Outbound {
            parts,
            added: Vec::new(),
            replaced: |_| false,
        }
    }
}

/// An open connection to a backend.
pub struct UpstreamConn {
    stream: Stream,
    /// Bytes read but not consumed yet; freed while the connection sits in
    /// the pool.
    buf: bytes::BytesMut,
    /// Encoding space for request heads; freed likewise.
    out: Vec<u8>,
    /// Whether this connection served a request before.
    reused: bool,
    /// When its latest request was sent (or it was opened).
    last_sent: Instant,
}

impl UpstreamConn {
    /// About to carry a request: buffers again.
    fn busy(&mut self) {
        if self.buf.capacity() == 0 {
            self.buf = read_buffer();
        }
        if self.out.capacity() == 0 {
            self.out = head_space();
        }
    }

    /// Going to sit in the pool: its buffers are freed.
    fn rest(&mut self) {
        rest(&mut self.buf);
        self.out = Vec::new();
    }

    /// The connection and what was read past the last response head, for
    /// a connection that switched protocols.
    pub fn into_io(self) -> (Stream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Whether bytes are buffered that no response claimed.
    fn has_leftovers(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("connection failed before the response: {source}")]
    Io {
        /// On a reused connection with nothing received: the backend closed
        /// an idle keep-alive connection as we used it.
        stale: bool,
        source: io::Error,
    },
    #[error("invalid response: {0}")]
    Parse(#[from] response::ParseError),
    #[error("reading the client's request body failed: {0}")]
    RequestBody(BoxError),
}

impl UpstreamError {
    fn is_stale(&self) -> bool {
        matches!(self, UpstreamError::Io { stale: true, .. })
    }
}

/// Opens a connection to `authority` within `timeout`: TCP, then the TLS
/// handshake when `tls` says so (both within the one timeout).
pub async fn connect(
    authority: &Authority,
    tls: Option<&TlsTarget>,
    timeout: Duration,
) -> Result<UpstreamConn, UpstreamError> {
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no connection within {}",
                humantime::format_duration(timeout)
            ),
        )
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(authority.as_str())).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
        Err(_) => return Err(UpstreamError::Connect(timed_out())),
    };
    let _ = tcp.set_nodelay(true);
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(target) => {
            let handshake = target.connector.connect(target.name.clone(), tcp);
            match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                Ok(Err(e)) => return Err(UpstreamError::Tls(e)),
                Err(_) => return Err(UpstreamError::Tls(timed_out())),
            }
        }
    };
    Ok(UpstreamConn {
        stream,
        buf: bytes::BytesMut::new(),
        out: Vec::new(),
        reused: false,
        last_sent: Instant::now(),
    })
}

/// Sends a request on `conn` and reads the response head.
pub async fn exchange(
    conn: &mut UpstreamConn,
    out: &Outbound,
    body: Option<BoxBody>,
) -> Result<ResponseHead, UpstreamError> {
    let stale_on = |conn: &UpstreamConn, received: bool| conn.reused && !received;
    let head = &out.parts;
    let framing = framing_for(&head.method, body.as_ref());
    conn.busy();
    conn.out.clear();
    encode_request_head(head, &out.added, out.replaced, framing, &mut conn.out);
    if let Err(source) = conn.stream.write_all(&conn.out).await {
        return Err(UpstreamError::Io {
            stale: stale_on(conn, false),
            source,
        });
    }
    match body {
        Some(body) => send_body(conn, body, framing).await?,
        // A no-op on TCP; TLS may hold back what the socket did not take.
        None => conn
            .stream
            .flush()
            .await
            .map_err(|source| UpstreamError::Io {
                stale: stale_on(conn, false),
                source,
            })?,
    }
    read_head(conn, |buf| parse_response_head(buf, &head.method)).await
}

/// Reads until `parse` finds a complete response head.
async fn read_head<T>(
    conn: &mut UpstreamConn,
    mut parse: impl FnMut(&mut bytes::BytesMut) -> Result<Option<T>, response::ParseError>,
) -> Result<T, UpstreamError> {
    let stale_on = |conn: &UpstreamConn, received: bool| conn.reused && !received;
    loop {
        if let Some(response) = parse(&mut conn.buf)? {
            return Ok(response);
        }
        let received = !conn.buf.is_empty();
        let filled =
            std::future::poll_fn(|cx| super::body::poll_fill(&mut conn.stream, &mut conn.buf, cx));
        let source = match filled.await {
            Ok(0) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the backend closed the connection",
            ),
            Ok(_) => continue,
            Err(source) => source,
        };
        return Err(UpstreamError::Io {
            stale: stale_on(conn, received),
            source,
        });
    }
}

/// One request already encoded (head and body) on a pooled or new
/// connection, answered with a [`LeanHead`]: the load generator's path,
/// which builds no header maps. Like [`send`], a pooled connection the
/// backend closed is replaced and the request sent again.
pub async fn send_encoded(
    pool: &ConnPool,
    authority: &Authority,
    connect_timeout: Duration,
    request: &[u8],
    method: &http::Method,
    capture: Option<&str>,
) -> Result<(UpstreamConn, LeanHead), UpstreamError> {
    let now = Instant::now();
    let exchange = async |conn: &mut UpstreamConn| {
        conn.busy();
        let written = match conn.stream.write_all(request).await {
            Ok(()) => conn.stream.flush().await,
            Err(e) => Err(e),
        };
        if let Err(source) = written {
            return Err(UpstreamError::Io {
                stale: conn.reused,
                source,
            });
        }
        read_head(conn, |buf| {
            response::parse_response_lean(buf, method, capture)
        })
        .await
    };
    if let Some(mut conn) = pool.checkout(now) {
        match exchange(&mut conn).await {
            Ok(head) => return Ok((conn, head)),
            Err(e) if e.is_stale() => {}
            Err(e) => return Err(e),
        }
    }
    let mut conn = connect(authority, pool.tls(), connect_timeout).await?;
    let head = exchange(&mut conn).await?;
    Ok((conn, head))
}

/// Writes a request body as `framing` says. A body that turns out longer
/// or shorter than its declared length is an error, not a desync.
async fn send_body(
    conn: &mut UpstreamConn,
    mut body: BoxBody,
    framing: BodyFraming,
) -> Result<(), UpstreamError> {
    let io_err = |source| UpstreamError::Io {
        stale: false,
        source,
    };
    let mut sent = 0u64;
    let declared = match framing {
        BodyFraming::Length(n) => Some(n),
        _ => None,
    };
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(UpstreamError::RequestBody)?;
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                continue;
            }
        };
        if !data.has_remaining() {
            continue;
        }
        let data: Bytes = data.copy_to_bytes(data.remaining());
        sent += data.len() as u64;
        if declared.is_some_and(|n| sent > n) {
            return Err(UpstreamError::RequestBody(
                "the request body is longer than its length".into(),
            ));
        }
        if framing == BodyFraming::Chunked {
            let size = format!("{:x}\r\n", data.len());
            conn.stream
                .write_all(size.as_bytes())
                .await
                .map_err(io_err)?;
            conn.stream.write_all(&data).await.map_err(io_err)?;
            conn.stream.write_all(b"\r\n").await.map_err(io_err)?;
        } else {
            conn.stream.write_all(&data).await.map_err(io_err)?;
        }
    }
    if declared.is_some_and(|n| sent != n) {
        return Err(UpstreamError::RequestBody(
            "the request body is shorter than its length".into(),
        ));
    }
    if framing == BodyFraming::Chunked {
        let last = match &trailers {
            Some(map) => super::server::encode_trailers(map),
            None => Bytes::from_static(b"0\r\n\r\n"),
        };
        conn.stream.write_all(&last).await.map_err(io_err)?;
    }
    conn.stream.flush().await.map_err(io_err)?;
    Ok(())
}

/// One request to a backend: on a pooled connection if there is one, else a
/// new one. A pooled connection found closed by the backend is replaced and
/// the request sent again when it has no body (nothing was processed).
/// `now`: the time the caller read just before sending.
pub async fn send(
    pool: &ConnPool,
    authority: &Authority,
    connect_timeout: Duration,
    head: &Outbound,
    body: Option<BoxBody>,
    now: Instant,
) -> Result<(UpstreamConn, ResponseHead), UpstreamError> {
    use http_body::Body as _;
    let replayable = body.is_none() || body.as_ref().is_some_and(|b| b.is_end_stream());
    let mut body = body.filter(|b| !b.is_end_stream());
    if let Some(mut conn) = pool.checkout(now) {
        match exchange(&mut conn, head, body.take()).await {
            Ok(response) => return Ok((conn, response)),
            Err(e) if e.is_stale() && replayable => {
                tracing::debug!(backend = %authority, "pooled connection was closed by the backend; reconnecting");
            }
            Err(e) => return Err(e),
        }
    }
    let mut conn = connect(authority, pool.tls(), connect_timeout).await?;
    let response = exchange(&mut conn, head, body).await?;
    Ok((conn, response))
}
