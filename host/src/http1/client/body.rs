//! The response body read straight from the backend connection: fixed
//! length, chunked or until close. The connection goes back to the pool
//! the moment the last byte is read, and the caller's completion guard is
//! dropped then too — the proxy's guard counts the request in flight, so
//! least-connections and the breaker see streaming responses as the load
//! they are, without this module knowing about balancers.

use std::sync::Arc;

use super::Stream;
use bytes::BytesMut;

use super::{ConnPool, UpstreamConn};
use crate::http1::body::{BodySource, Decoder, FramedBody};
use crate::http1::response::Framing;

/// A response body read straight off a backend connection.
pub type UpstreamBody<G> = FramedBody<BackendEnd<G>>;

/// The backend connection a response body reads from, where it goes when
/// the body is done, and what is dropped then.
pub struct BackendEnd<G> {
    conn: Option<UpstreamConn>,
    keep_alive: bool,
    pool: Arc<ConnPool>,
    guard: Option<G>,
}

/// A response body on `conn`, framed as the head said; `guard` is dropped
/// when the body ends, completely or not.
pub fn upstream_body<G>(
    conn: UpstreamConn,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<ConnPool>,
    guard: G,
) -> UpstreamBody<G> {
    let decoder = match framing {
        Framing::Empty | Framing::Length(0) => Decoder::Done,
        Framing::Length(n) => Decoder::Length(n),
        Framing::Chunked => Decoder::ChunkSize,
        Framing::UntilClose => Decoder::UntilClose,
    };
    let end = BackendEnd {
        conn: Some(conn),
        keep_alive: keep_alive && decoder != Decoder::UntilClose,
        pool,
        guard: Some(guard),
    };
    FramedBody::new(end, decoder)
}

impl<G> BodySource for BackendEnd<G> {
    type Io = Stream;

    fn io(&mut self) -> Option<(&mut Stream, &mut BytesMut)> {
        self.conn.as_mut().map(|c| (&mut c.stream, &mut c.buf))
    }

    /// The connection goes back to the pool (when the body is complete, the
    /// backend allows and left nothing unexpected behind) and the guard is
    /// dropped.
    fn finish(&mut self, complete: bool) {
        self.guard.take();
        if let Some(conn) = self.conn.take()
            && complete
            && self.keep_alive
            && !conn.has_leftovers()
        {
            self.pool.checkin(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::http1::BoxError;

    /// A body over a real loopback connection whose far end writes `parts`.
    async fn body_of(
        framing: Framing,
        parts: &[&'static [u8]],
        close: bool,
    ) -> (UpstreamBody<()>, Arc<ConnPool>) {
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
            stream: super::Stream::Plain(ours),
            buf: crate::http1::scratch::read_buffer(),
            out: Vec::new(),
            reused: false,
            last_sent: std::time::Instant::now(),
        };
        let pool = Arc::new(ConnPool::default());
        (upstream_body(conn, framing, true, pool.clone(), ()), pool)
    }

    async fn read_all(body: UpstreamBody<()>) -> Result<Vec<u8>, BoxError> {
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
