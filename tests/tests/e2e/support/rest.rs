//! The demo's REST sample (`/items`) served on a test port, recording every
//! request with the status it got, so tests can check what a generator did.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard::demo::rest::RestStore;
use tokio::net::TcpListener;

/// One request as the backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// The item id in the path, or the one a create made.
    pub id: Option<String>,
    pub status: u16,
}

pub struct RestBackend {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Seen>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl RestBackend {
    pub async fn start() -> RestBackend {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let store = Arc::new(RestStore::default());
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let shared = log.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let (store, log) = (store.clone(), shared.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (store, log) = (store.clone(), log.clone());
                    async move {
                        let method = req.method().to_string();
                        let path_id = req.uri().path().strip_prefix("/items/").map(str::to_string);
                        let resp = store.handle(req).await;
                        let created = resp
                            .headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|l| l.rsplit('/').next())
                            .map(str::to_string);
                        log.lock().unwrap().push(Seen {
                            method,
                            id: path_id.or(created),
                            status: resp.status().as_u16(),
                        });
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                tokio::spawn(conn);
            }
        });
        RestBackend { addr, log, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for RestBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
