//! A scriptable origin for cache tests: per path, the status, headers and
//! body to answer with, an optional `ETag` it revalidates against (304), and
//! a delay; it counts requests per path and keeps each request's headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
    /// A conditional request gets a `304` with these headers instead (and
    /// not the script's own).
    pub not_modified: Option<Vec<(String, String)>>,
}

impl Script {
    pub fn ok(cache_control: &str, body: &str) -> Script {
        Script {
            status: 200,
            headers: vec![("cache-control".into(), cache_control.into())],
            body: body.into(),
            delay: Duration::ZERO,
            not_modified: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Script {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Script>,
    hits: HashMap<String, u64>,
    requests: Vec<(String, String, HeaderMap)>,
}

pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start() -> Origin {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let state = shared.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, req).await) }
                });
                let conn = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                tokio::spawn(conn);
            }
        });
        Origin {
            addr,
            state,
            accept,
        }
    }

    pub fn script(&self, path: &str, script: Script) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.into(), script);
    }

    /// Requests the origin got for `path` (any method).
    pub fn hits(&self, path: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Headers of the last request for `path`.
    pub fn last_headers(&self, path: &str) -> Option<HeaderMap> {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .rev()
            .find(|(_, p, _)| p == path)
            .map(|(_, _, h)| h.clone())
    }
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let script = {
        let mut s = state.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        s.requests.push((
            req.method().to_string(),
            path.clone(),
            req.headers().clone(),
        ));
        s.scripts.get(&path).cloned()
    };
    let Some(script) = script else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"no script\n")));
        *r.status_mut() = http::StatusCode::NOT_FOUND;
        return r;
    };
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
    let etag = script
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone());
    // If-None-Match compares weakly (RFC 9110 §13.1.2): `W/"a"` matches `"a"`.
    let weak = |v: &str| v.trim().trim_start_matches("W/").to_string();
    let revalidated = etag.as_deref().map(weak).is_some_and(|tag| {
        req.headers()
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|inm| inm.split(',').any(|t| weak(t) == tag))
    });
    if let Some(headers) = &script.not_modified
        && req.headers().contains_key("if-none-match")
    {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = http::StatusCode::NOT_MODIFIED;
        for (n, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        return r;
    }
    let (status, body) = if revalidated && script.status == 200 {
        (304, String::new())
    } else {
        (script.status, script.body.clone())
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    for (n, v) in &script.headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    r
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
