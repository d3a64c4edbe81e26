//! A WebSocket echo backend (tokio-tungstenite): every text and binary
//! message comes back as it was sent; pings are answered by the library.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};

pub struct WsBackend {
    pub addr: SocketAddr,
    /// WebSocket handshakes completed.
    pub sessions: Arc<AtomicU64>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl WsBackend {
    pub async fn start() -> WsBackend {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> WsBackend {
        let tcp = TcpListener::bind(addr).await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let sessions = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (s, c) = (sessions.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let s = s.clone();
                let task = tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    s.fetch_add(1, SeqCst);
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        WsBackend {
            addr,
            sessions,
            accept,
            conns,
        }
    }

    /// Stops listening and drops every connection, as a crashed process
    /// would.
    pub fn kill(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.kill();
    }
}
