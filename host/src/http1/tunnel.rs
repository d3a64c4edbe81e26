//! Protocol upgrades (RFC 9110 §7.8): after a `101 Switching Protocols`
//! the client connection and the backend connection become one byte
//! tunnel (a WebSocket, most often), copied both ways until either side
//! closes or nothing moves for the idle timeout.
//!
//! The wire layer only marks and carries: the server loop marks a request
//! that asks to upgrade ([`UpgradeRequested`] in its extensions), the proxy
//! answers a `101` with the backend's connection in an [`UpgradeSlot`] of
//! the response's extensions, and the server loop, which owns the client
//! connection, writes the `101` and runs the tunnel in the connection's own
//! task. A tunnel therefore lives as long as its connection: a config
//! reload does not touch it, and shutdown waits for it up to the drain
//! time like any request in flight.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::either::Either;

use super::client::Stream;

/// In a request's extensions: the client asked to switch protocols
/// (`Connection: upgrade` and an `Upgrade` header, HTTP/1.1, no body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeRequested;

/// How a tunnel went, for whoever opened it.
#[derive(Clone, Copy, Debug)]
pub struct TunnelStats {
    pub to_backend: u64,
    pub to_client: u64,
    pub duration: Duration,
    /// `backend` (it closed its side), `idle` or `error`.
    pub ended_by: &'static str,
}

/// A backend connection that switched protocols.
pub struct Upgraded {
    pub backend: Stream,
    /// Bytes the backend sent right after its `101` head.
    pub leftover: Bytes,
    /// The tunnel closes when nothing moved either way for this long.
    pub idle: Duration,
    /// Called once when the tunnel closes.
    pub done: Box<dyn FnOnce(TunnelStats) + Send>,
}

/// In a `101` response's extensions: the backend side of the tunnel, taken
/// once by the connection loop.
#[derive(Clone)]
pub struct UpgradeSlot(Arc<Mutex<Option<Upgraded>>>);

impl UpgradeSlot {
    pub fn new(up: Upgraded) -> Self {
        UpgradeSlot(Arc::new(Mutex::new(Some(up))))
    }

    pub fn take(&self) -> Option<Upgraded> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for UpgradeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradeSlot")
    }
}

/// A reading side with its traffic counted and its activity stamped.
struct Counted<T> {
    inner: T,
    read: u64,
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.read += n;
            let ms = self.start.elapsed().as_millis() as u64;
            self.last.store(ms, Relaxed);
        }
        polled
    }
}

/// Copies `from` into `to` until `from` ends, then shuts `to`'s writing
/// side (the half-close travels on).
async fn pipe<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut from = tokio::io::BufReader::with_capacity(TUNNEL_BUFFER, from);
    tokio::io::copy_buf(&mut from, to).await?;
    to.shutdown().await
}

/// Copy buffer per direction.
const TUNNEL_BUFFER: usize = 16 * 1024;

/// Runs a tunnel between the client connection (its reading half with the
/// bytes already read past the request head, and its writing half) and an
/// upgraded backend connection.
///
/// The backend ending its side ends the tunnel (after passing the close
/// on): the session is over, as nginx also has it, and a client that
/// keeps its socket half-open does not hold the tunnel. The client ending
/// its side is passed on, and the backend may still answer until it
/// closes or the idle timeout passes with nothing moving either way.
pub async fn run<R, W>(client_read: R, client_leftover: BytesMut, mut client_write: W, up: Upgraded)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let Upgraded {
        mut backend,
        leftover,
        idle,
        done,
    } = up;
    // What each side sent before the switch goes first.
    let early = async {
        if !client_leftover.is_empty() {
            backend.write_all(&client_leftover).await?;
            backend.flush().await?;
        }
        if !leftover.is_empty() {
            client_write.write_all(&leftover).await?;
            client_write.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let early_ok = early.await.is_ok();
    let (backend_read, mut backend_write) = tokio::io::split(backend);
    let counted = |inner| Counted {
        inner,
        read: 0,
        last: last.clone(),
        start,
    };
    let mut from_client = counted(Either::Left(client_read));
    let mut from_backend = counted(Either::Right(backend_read));
    let ended_by = if early_ok {
        let watch = async {
            loop {
                let quiet_since = Duration::from_millis(last.load(Relaxed));
                let deadline = start + quiet_since + idle;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline.into()).await;
            }
        };
        let up = pipe(&mut from_client, &mut backend_write);
        let down = pipe(&mut from_backend, &mut client_write);
        tokio::pin!(watch, up, down);
        let mut client_done = false;
        loop {
            tokio::select! {
                sent = &mut up, if !client_done => {
                    if sent.is_err() {
                        break "error";
                    }
                    client_done = true;
                }
                sent = &mut down => break if sent.is_ok() { "backend" } else { "error" },
                () = &mut watch => break "idle",
            }
        }
    } else {
        "error"
    };
    let stats = TunnelStats {
        to_backend: from_client.read + client_leftover.len() as u64,
        to_client: from_backend.read + leftover.len() as u64,
        duration: start.elapsed(),
        ended_by,
    };
    tracing::debug!(
        "tunnel closed ({ended_by}) after {:?}: {} bytes to the backend, {} to the client",
        stats.duration,
        stats.to_backend,
        stats.to_client
    );
    done(stats);
}
