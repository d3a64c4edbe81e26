//! The response body read straight from the backend connection: fixed
//! length, chunked or until close. The connection goes back to the pool
//! the moment the last byte is read, and the backend's in-flight count
//! drops then too, so least-connections and the breaker see streaming
//! responses as the load they are.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use super::codec::Framing;
use super::{ConnPool, UpstreamConn};
use crate::proxy::{BoxError, Upstream};

/// Counts one request in flight on a backend (and its upstream) for as long
/// as it lives.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    backend: usize,
}

impl InFlight {
    pub fn start(upstream: &Arc<Upstream>, backend: usize) -> Self {
        upstream.backends[backend]
            .state
            .in_flight
            .fetch_add(1, Relaxed);
        upstream.in_flight.fetch_add(1, Relaxed);
        InFlight {
            upstream: upstream.clone(),
            backend,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.backends[self.backend]
            .state
            .in_flight
            .fetch_sub(1, Relaxed);
        self.upstream.in_flight.fetch_sub(1, Relaxed);
    }
}

enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

pub struct UpstreamBody {
    conn: Option<UpstreamConn>,
    state: State,
    keep_alive: bool,
    pool: Arc<ConnPool>,
    guard: Option<InFlight>,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

fn invalid(msg: &str) -> BoxError {
    Box::new(io::Error::new(io::ErrorKind::InvalidData, msg.to_string()))
}

impl UpstreamBody {
    pub fn new(
        conn: UpstreamConn,
        framing: Framing,
        keep_alive: bool,
        pool: Arc<ConnPool>,
        guard: Option<InFlight>,
    ) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            state,
            keep_alive,
            pool,
            guard,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to the pool (when the
    /// backend allows and left nothing unexpected behind) and the request
    /// stops counting as in flight.
    fn finish(&mut self) {
        self.state = State::Done;
        self.guard.take();
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.pool.checkin(conn);
        }
    }

    fn buf(&mut self) -> &mut bytes::BytesMut {
        // Only called while a state that reads is active, i.e. with a connection.
        &mut self
            .conn
            .as_mut()
            .expect("body reads with a connection")
            .buf
    }

    /// Reads more from the backend; `Ok(0)` is end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, BoxError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        loop {
            ready!(conn.stream.poll_read_ready(cx))?;
            if conn.buf.capacity() - conn.buf.len() < 4096 {
                conn.buf.reserve(16 * 1024);
            }
            match conn.stream.try_read_buf(&mut conn.buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// Reads more; the backend closing the connection here is an error.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match ready!(self.poll_fill(cx))? {
            0 => Poll::Ready(Err(invalid("the backend closed the connection mid-body"))),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Up to `max` buffered bytes.
    fn take(&mut self, max: u64) -> Bytes {
        let n = max.min(self.buf().len() as u64) as usize;
        self.buf().split_to(n).freeze()
    }

    /// A complete CRLF-terminated line from the buffer, without the CRLF.
    fn take_line(&mut self) -> Result<Option<Bytes>, BoxError> {
        let buf = self.buf();
        match buf.windows(2).position(|w| w == b"\r\n") {
            Some(at) => {
                let line = buf.split_to(at).freeze();
                buf.advance(2);
                Ok(Some(line))
            }
            None if buf.len() > MAX_LINE => Err(invalid("chunk-size or trailer line too long")),
            None => Ok(None),
        }
    }

    /// The next piece of body data, decoding the framing.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(None)),
                State::Length(remaining) => {
                    if self.buf().is_empty() {
                        ready!(self.poll_more(cx))?;
                    }
                    let data = self.take(remaining);
                    let left = remaining - data.len() as u64;
                    if left == 0 {
                        self.finish();
                    } else {
                        self.state = State::Length(left);
                    }
                    return Poll::Ready(Ok(Some(data)));
                }
                State::UntilClose => {
                    if self.buf().is_empty() && ready!(self.poll_fill(cx))? == 0 {
                        self.keep_alive = false;
                        self.finish();
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Ok(Some(self.buf().split().freeze())));
                }
                State::ChunkSize | State::Trailers => {
                    let Some(line) = self.take_line()? else {
                        ready!(self.poll_more(cx))?;
                        continue;
                    };
                    if matches!(self.state, State::Trailers) {
                        // Trailers are not forwarded; the blank line ends the body.
                        if line.is_empty() {
                            self.finish();
                            return Poll::Ready(Ok(None));
                        }
                        continue;
                    }
                    let size = line.split(|b| *b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size)
                        .ok()
                        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                        .ok_or_else(|| invalid("invalid chunk size"))?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(remaining) => {
                    if self.buf().is_empty() {
                        ready!(self.poll_more(cx))?;
                    }
                    let data = self.take(remaining);
                    let left = remaining - data.len() as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Poll::Ready(Ok(Some(data)));
                }
                State::ChunkEnd => {
                    if self.buf().len() < 2 {
                        ready!(self.poll_more(cx))?;
                        continue;
                    }
                    if &self.buf()[..2] != b"\r\n" {
                        return Poll::Ready(Err(invalid("chunk data not followed by CRLF")));
                    }
                    self.buf().advance(2);
                    self.state = State::ChunkSize;
                }
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.poll_data(cx)
            .map(|r| r.transpose().map(|d| d.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A body over a real loopback connection whose far end writes `parts`.
    async fn body_of(
        framing: Framing,
        parts: &[&'static [u8]],
        close: bool,
    ) -> (UpstreamBody, Arc<ConnPool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ours = TcpStream::connect(addr).await.unwrap();
        let (mut theirs, _) = listener.accept().await.unwrap();
        let parts: Vec<&'static [u8]> = parts.to_vec();
        tokio::spawn(async move {
            for p in parts {
                theirs.write_all(p).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            if !close {
                // Keep the connection open until the test ends.
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
        let conn = UpstreamConn {
            stream: ours,
            buf: bytes::BytesMut::new(),
            out: Vec::new(),
            reused: false,
        };
        let pool = Arc::new(ConnPool::default());
        (
            UpstreamBody::new(conn, framing, true, pool.clone(), None),
            pool,
        )
    }

    async fn read_all(body: UpstreamBody) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn fixed_length_split_across_reads_returns_the_connection() {
        let (body, pool) = body_of(Framing::Length(11), &[b"hello", b" world"], false).await;
        assert_eq!(read_all(body).await.unwrap(), b"hello world");
        assert_eq!(
            pool.idle(),
            1,
            "a clean keep-alive connection goes back to the pool"
        );
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        let (body, pool) = body_of(
            Framing::Chunked,
            &[
                b"5;ext=1\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
            ],
            false,
        )
        .await;
        assert_eq!(read_all(body).await.unwrap(), b"hello world");
        assert_eq!(pool.idle(), 1);
    }

    #[tokio::test]
    async fn until_close_ends_with_the_connection_and_does_not_pool_it() {
        let (body, pool) = body_of(Framing::UntilClose, &[b"abc", b"def"], true).await;
        assert_eq!(read_all(body).await.unwrap(), b"abcdef");
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn truncated_and_malformed_bodies_are_errors() {
        let (body, pool) = body_of(Framing::Length(10), &[b"short"], true).await;
        let e = read_all(body).await.unwrap_err();
        assert!(e.to_string().contains("mid-body"), "{e}");
        assert_eq!(pool.idle(), 0);
        let (body, _) = body_of(Framing::Chunked, &[b"zz\r\nhello\r\n"], true).await;
        assert!(
            read_all(body)
                .await
                .unwrap_err()
                .to_string()
                .contains("invalid chunk size")
        );
        let (body, _) = body_of(Framing::Chunked, &[b"2\r\nhiXX"], true).await;
        assert!(
            read_all(body)
                .await
                .unwrap_err()
                .to_string()
                .contains("CRLF")
        );
    }
}
