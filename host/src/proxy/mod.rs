//! The data plane: listener, the request path as a stack of tower layers,
//! forwarding to backends, and header rules.
//!
//! A request moves through named phases, each one layer (see `stack.rs` for
//! the assembly, top to bottom):
//!
//! ```text
//! accept → limits → route → admission → forwarded headers → retry → forward
//! ```
//!
//! Phases above `route` see an [`Arrival`]; from `route` down they see an
//! [`Exchange`], which adds the route. Both carry the config snapshot the
//! request runs on and the client's address.

mod admission;
mod decode;
mod error;
mod forward;
mod h1;
pub(crate) mod headers;
mod layers;
mod listener;
mod retry;
mod stack;
mod state;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

pub use admission::Admission;
pub use error::ProxyError;
pub use listener::{Listener, ListenerHandle};
pub use retry::RetryBudget;
pub use stack::{ProxyService, Stack, build_stack};
pub use state::{Carried, ProxyState, Route, Upstream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of every request and response inside the proxy.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A short text body for responses the proxy makes itself.
pub fn text_body(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty_body() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Facts about the client connection a request arrived on; shared, so that
/// handing it to every phase and attempt is one reference count.
#[derive(Clone, Debug)]
pub struct ConnInfo(Arc<Peer>);

#[derive(Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The client's IP as a header value, formatted once per connection for
    /// `X-Forwarded-For`.
    pub client_ip: http::HeaderValue,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, local: SocketAddr) -> Self {
        let client_ip = http::HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        ConnInfo(Arc::new(Peer {
            remote,
            local,
            client_ip,
        }))
    }
}

impl std::ops::Deref for ConnInfo {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.0
    }
}

/// A request as it arrives, before routing.
pub struct Arrival {
    pub request: Request<ProxyBody>,
    pub conn: ConnInfo,
    /// The snapshot this request runs on, loaded once when it arrived.
    pub state: Arc<ProxyState>,
    pub received: Instant,
}

/// A routed request on its way through the phases below `route`.
pub struct Exchange {
    pub request: Request<ProxyBody>,
    pub conn: ConnInfo,
    pub state: Arc<ProxyState>,
    pub route: Arc<Route>,
    pub received: Instant,
    /// When the whole exchange must have its response headers, retries
    /// included (`timeouts.request`).
    pub deadline: Instant,
    /// Header lines the forwarded-headers phase adds, encoded.
    pub added: Vec<u8>,
}
