//! The data plane: the listener, the request path as a stack of tower
//! layers, forwarding to backends, and header rules.
//!
//! A request moves through named phases, each one layer (see `stack.rs` for
//! the assembly, top to bottom):
//!
//! ```text
//! accept → limits → route → rate limits → cache → compress → admission → forwarded headers → retry → forward
//! ```
//!
//! Phases above `route` see an [`Arrival`]; from `route` down they see an
//! [`Exchange`], which adds the route. Both carry the config snapshot the
//! request runs on and the client's address. Every phase works on the
//! normalized head the wire layer (`crate::http1`) produced: the request's
//! host is `uri().authority()`, and nowhere else. No phase handles bytes.

mod admission;
mod error;
mod forward;
mod grpc;
pub(crate) mod headers;
mod layers;
pub(crate) use layers::layer;
mod listener;
pub mod registry;
mod retry;
mod stack;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use tower::Service;

pub use crate::http1::{BoxError, empty_body, text_body};
pub use admission::{Admission, CLASSES as PRIORITY_CLASSES, ClassView, QueueSettings, QueueWait};
pub use error::ProxyError;
pub use forward::InFlight;
pub use grpc::is_call as is_grpc_call;
pub use listener::{Listener, ListenerHandle};
pub use registry::Registry;
pub use retry::RetryBudget;
pub use stack::{ProxyService, Stack, build_stack};
pub use state::{ProxyState, Route, Upstream};

/// Body type of every request and response inside the proxy.
pub type ProxyBody = crate::http1::BoxBody;

/// Facts about the client connection a request arrived on; shared, so that
/// handing it to every phase and attempt is one reference count.
#[derive(Clone, Debug)]
pub struct ConnInfo(Arc<Peer>);

#[derive(Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The peer is in `listen.trusted_proxies`: its forwarding headers are
    /// appended to rather than replaced.
    pub trusted: bool,
    /// The connection came in over TLS.
    pub secure: bool,
    /// The client's IP as text, formatted once per connection for the
    /// forwarding headers; inline, so a connection costs no allocation for
    /// it (an IPv6 address is at most 39 characters).
    ip: [u8; 39],
    ip_len: u8,
}

impl Peer {
    /// The client's IP, as the forwarding headers write it.
    pub fn ip_text(&self) -> &[u8] {
        &self.ip[..usize::from(self.ip_len)]
    }
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, local: SocketAddr, trusted: bool, secure: bool) -> Self {
        use std::io::Write;
        let mut ip = [0u8; 39];
        let mut cursor = std::io::Cursor::new(&mut ip[..]);
        // Cannot fail: 39 bytes hold any IP address.
        let _ = write!(cursor, "{}", remote.ip());
        let ip_len = cursor.position() as u8;
        ConnInfo(Arc::new(Peer {
            remote,
            local,
            trusted,
            secure,
            ip,
            ip_len,
        }))
    }
}

impl Peer {
    /// What the connection's requests are for when they do not say.
    pub fn origin(&self) -> crate::http1::Origin {
        if self.secure {
            crate::http1::Origin::https(self.local)
        } else {
            crate::http1::Origin::http(self.local)
        }
    }
}

impl std::ops::Deref for ConnInfo {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.0
    }
}

/// The phases below routing, as the phases that hold on to them need them:
/// cloneable and sendable, for revalidations that run in the background and
/// for phases that wait before going on (queued admission, shared limits).
pub trait Downstream:
    Service<Exchange, Response = Response<ProxyBody>, Error = ProxyError, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> Downstream for S where
    S: Service<
            Exchange,
            Response = Response<ProxyBody>,
            Error = ProxyError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
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
