//! The pooled HTTP/1.1 client that talks to backends.
//!
//! One client serves every upstream, so keep-alive connections are pooled per
//! backend address and survive reloads. It is rebuilt only when the connect
//! timeout changes.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ProxyBody;

pub type BackendClient = Client<HttpConnector, ProxyBody>;

/// Idle pooled connections are closed after this long; below the usual 60 s+
/// keep-alive of backends so we rarely reuse a connection the backend closed.
const POOL_IDLE: Duration = Duration::from_secs(50);

pub fn build_client(connect_timeout: Duration) -> BackendClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        // The proxy sets Host itself (the client's Host is preserved).
        .set_host(false)
        .build(connector)
}
