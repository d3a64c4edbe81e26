//! Upgrades: WebSocket through the proxy with real tokio-tungstenite peers,
//! tunnels across reloads and shutdown, and what is refused.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::ws::WsBackend;
use crate::support::{Proxy, eventually, get};

const PATIENCE: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn config(backend: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n{extra}\n\
         [[routes]]\nupstream = \"app\"\n\n\
         [upstreams.app]\nstrategy = \"least_connections\"\nbackends = [{{ address = \"{backend}\" }}]\n"
    )
}

async fn connect(proxy: &Proxy) -> Ws {
    let url = format!("ws://{}/chat", proxy.addr);
    let (ws, response) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}", proxy.logs()));
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `msg` and waits for the next data message.
async fn echo(ws: &mut Ws, msg: Message) -> Message {
    ws.send(msg).await.expect("send");
    loop {
        let next = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("an answer in time")
            .expect("the stream is open")
            .expect("a message");
        if next.is_text() || next.is_binary() {
            return next;
        }
    }
}

async fn gauge(proxy: &Proxy, name: &str) -> f64 {
    proxy.metric(name, &[("upstream", "app")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_large_messages_ping_and_a_reload_mid_stream() {
    let backend = WsBackend::start().await;
    let proxy = Proxy::start(&config(backend.addr, ""));
    let mut ws = connect(&proxy).await;

    assert_eq!(
        echo(&mut ws, Message::text("hello")).await,
        Message::text("hello")
    );
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        echo(&mut ws, Message::binary(big.clone())).await,
        Message::binary(big),
        "a 4 MiB message arrives whole"
    );
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("pong in time")
        .expect("open")
        .expect("a frame");
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));

    // The tunnel is in flight for least-connections and counted as open.
    let view = proxy.backend_view(backend.addr).await;
    assert_eq!(view["in_flight"], 1, "{view}");
    assert_eq!(gauge(&proxy, "switchyard_tunnels_open").await, 1.0);

    // A reload mid-stream leaves the tunnel alone.
    proxy
        .apply(&config(backend.addr, "[timeouts]\nconnect = \"3s\"\n"))
        .await;
    assert_eq!(
        echo(&mut ws, Message::text("after reload")).await,
        Message::text("after reload")
    );
    assert_eq!(
        backend.sessions.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    eventually(PATIENCE, "the tunnel to be counted closed", || async {
        (gauge(&proxy, "switchyard_tunnels_open").await == 0.0).then_some(())
    })
    .await;
    let view = proxy.backend_view(backend.addr).await;
    assert_eq!(view["in_flight"], 0, "{view}");
    let to_backend = proxy
        .metric(
            "switchyard_tunnel_bytes_total",
            &[("direction", "to_backend")],
        )
        .await;
    assert!(to_backend > 4.0 * 1024.0 * 1024.0, "{to_backend}");
    assert_eq!(
        proxy
            .metric("switchyard_tunnel_duration_seconds_count", &[])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_stream_closes_the_client_side() {
    let backend = WsBackend::start().await;
    let proxy = Proxy::start(&config(backend.addr, ""));
    let mut ws = connect(&proxy).await;
    assert_eq!(echo(&mut ws, Message::text("1")).await, Message::text("1"));
    backend.kill();
    // The client's stream ends (with or without a close frame); it does
    // not hang.
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client side was not closed");
    eventually(PATIENCE, "the tunnel to be counted closed", || async {
        (gauge(&proxy, "switchyard_tunnels_open").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_and_shutdown_drains_open_ones() {
    let backend = WsBackend::start().await;
    let mut proxy = Proxy::start(&config(
        backend.addr,
        "[timeouts]\ntunnel_idle = \"1s\"\ndrain = \"30s\"\n",
    ));
    let mut idle = connect(&proxy).await;
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match idle.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle tunnel was not closed");

    // SIGTERM: no new connections, but an open tunnel keeps working until
    // its client closes it, and then the process exits.
    let mut ws = connect(&proxy).await;
    proxy.signal(nix::sys::signal::Signal::SIGTERM);
    eventually(PATIENCE, "the proxy to stop accepting", || async {
        tokio::net::TcpStream::connect(proxy.addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert_eq!(
        echo(&mut ws, Message::text("still here")).await,
        Message::text("still here")
    );
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    let status = proxy.wait_exit(PATIENCE).expect("the proxy exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_the_client_did_not_ask_for_is_a_502() {
    // A backend that switches protocols whatever it is asked.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
                    )
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let proxy = Proxy::start(&config(addr, "[upstreams.app.retry]\nattempts = 1\n"));
    let r = get(&proxy.url("/plain")).await.expect("request");
    assert_eq!(r.status, 502, "{}", r.body);
}
