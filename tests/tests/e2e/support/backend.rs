//! A controllable backend: status, latency, health status, holding requests,
//! dropping connections, and being killed outright.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

/// Permits that stand for "no concurrency limit".
const UNLIMITED: usize = 1 << 20;

pub struct Control {
    pub status: AtomicU16,
    pub health_status: AtomicU16,
    pub latency_ms: AtomicU64,
    /// Requests wait until `release` while set.
    pub hold: AtomicBool,
    pub release: Notify,
    /// Close the connection without answering.
    pub drop_connections: AtomicBool,
    /// Every nth request gets a 500 (0: none).
    pub fail_every: AtomicU32,
    /// Requests served at once, first come first served; more wait in a
    /// queue. Makes latency grow with load, as a saturated service's does.
    gate: tokio::sync::Semaphore,
    /// (permits the gate has, permits it should have)
    gate_size: std::sync::Mutex<(usize, usize)>,
    pub requests: AtomicU64,
    pub health_checks: AtomicU64,
    pub active: AtomicU32,
    pub by_method: Mutex<HashMap<Method, u64>>,
    pub last_headers: Mutex<Option<HeaderMap>>,
    /// The body of the last request, when it was read whole.
    pub last_body: Mutex<Option<Bytes>>,
}

pub struct TestBackend {
    pub addr: SocketAddr,
    pub name: String,
    pub ctl: Arc<Control>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test backend");
        let addr = tcp.local_addr().expect("local addr");
        let ctl = Arc::new(Control {
            status: AtomicU16::new(200),
            health_status: AtomicU16::new(200),
            latency_ms: AtomicU64::new(0),
            hold: AtomicBool::new(false),
            release: Notify::new(),
            drop_connections: AtomicBool::new(false),
            fail_every: AtomicU32::new(0),
            gate: tokio::sync::Semaphore::new(UNLIMITED),
            gate_size: std::sync::Mutex::new((UNLIMITED, UNLIMITED)),
            requests: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            active: AtomicU32::new(0),
            by_method: Mutex::default(),
            last_headers: Mutex::default(),
            last_body: Mutex::default(),
        });
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn(accept_loop(
            tcp,
            name.to_string(),
            ctl.clone(),
            conns.clone(),
        ));
        TestBackend {
            addr,
            name: name.to_string(),
            ctl,
            accept,
            conns,
        }
    }

    pub fn requests(&self) -> u64 {
        self.ctl.requests.load(SeqCst)
    }

    pub fn method_count(&self, m: Method) -> u64 {
        self.ctl
            .by_method
            .lock()
            .unwrap()
            .get(&m)
            .copied()
            .unwrap_or(0)
    }

    /// The headers of the latest request.
    pub fn last_headers(&self) -> HeaderMap {
        self.ctl
            .last_headers
            .lock()
            .unwrap()
            .clone()
            .expect("a request reached the backend")
    }

    pub fn set_status(&self, s: u16) {
        self.ctl.status.store(s, SeqCst);
    }

    pub fn set_health(&self, s: u16) {
        self.ctl.health_status.store(s, SeqCst);
    }

    pub fn set_latency(&self, ms: u64) {
        self.ctl.latency_ms.store(ms, SeqCst);
    }

    pub fn hold(&self, on: bool) {
        self.ctl.hold.store(on, SeqCst);
        if !on {
            self.ctl.release.notify_waiters();
        }
    }

    pub fn fail_every(&self, n: u32) {
        self.ctl.fail_every.store(n, SeqCst);
    }

    /// Serve at most `n` requests at once (0: no limit).
    pub fn set_concurrency(&self, n: u32) {
        let target = if n == 0 { UNLIMITED } else { n as usize };
        let mut size = self.ctl.gate_size.lock().unwrap();
        size.1 = target;
        if target > size.0 {
            self.ctl.gate.add_permits(target - size.0);
            size.0 = target;
        } else {
            // Free permits go now; permits in use go as they are released.
            size.0 -= self.ctl.gate.forget_permits(size.0 - target);
        }
    }

    pub fn set_drop_connections(&self, on: bool) {
        self.ctl.drop_connections.store(on, SeqCst);
    }

    /// Stops listening and closes every connection: the port refuses.
    pub fn kill(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    name: String,
    ctl: Arc<Control>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = tcp.accept().await else {
            continue;
        };
        let name = name.clone();
        let ctl = ctl.clone();
        let svc = service_fn(move |req| serve(req, name.clone(), ctl.clone()));
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let handle = tokio::spawn(async move {
            let _ = conn.await;
        });
        conns.lock().unwrap().push(handle.abort_handle());
    }
}

async fn serve(
    req: Request<Incoming>,
    name: String,
    ctl: Arc<Control>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if req.uri().path() == "/healthz" {
        ctl.health_checks.fetch_add(1, SeqCst);
        let mut r = Response::new(Full::new(Bytes::from_static(b"health")));
        *r.status_mut() = StatusCode::from_u16(ctl.health_status.load(SeqCst)).unwrap();
        return Ok(r);
    }
    if ctl.drop_connections.load(SeqCst) {
        ctl.requests.fetch_add(1, SeqCst);
        return Err(std::io::Error::other("dropping the connection on purpose"));
    }
    let n = ctl.requests.fetch_add(1, SeqCst) + 1;
    *ctl.by_method
        .lock()
        .unwrap()
        .entry(req.method().clone())
        .or_default() += 1;
    *ctl.last_headers.lock().unwrap() = Some(req.headers().clone());
    ctl.active.fetch_add(1, SeqCst);
    let body = req.into_body().collect().await.ok().map(|b| b.to_bytes());
    *ctl.last_body.lock().unwrap() = body;
    let place = ctl.gate.acquire().await.expect("the gate is never closed");
    let latency = ctl.latency_ms.load(SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    {
        let mut size = ctl.gate_size.lock().unwrap();
        if size.0 > size.1 {
            place.forget();
            size.0 -= 1;
        } else {
            drop(place);
        }
    }
    while ctl.hold.load(SeqCst) {
        let released = ctl.release.notified();
        if !ctl.hold.load(SeqCst) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), released).await;
    }
    ctl.active.fetch_sub(1, SeqCst);
    let mut r = Response::new(Full::new(Bytes::from(name.clone())));
    let every = u64::from(ctl.fail_every.load(SeqCst));
    let status = if every > 0 && n.is_multiple_of(every) {
        500
    } else {
        ctl.status.load(SeqCst)
    };
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("x-backend", name.parse().unwrap());
    Ok(r)
}
