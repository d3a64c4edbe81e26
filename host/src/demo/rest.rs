//! A REST-style sample resource, `/items`, that the demo's backends share so
//! the `crud-mix` generator runs end to end out of the box:
//!
//! - `POST /items` stores the JSON body and answers `201` with
//!   `{"id": "..."}` and a `Location` header;
//! - `GET /items/{id}`, `PUT /items/{id}`, `DELETE /items/{id}` answer
//!   `200`/`200`/`204`, or `404` for an unknown id;
//! - `GET /items` answers the number of items; other methods get `405`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

/// Largest item body accepted.
const MAX_ITEM: usize = 1 << 20;

/// The items, shared by every sample backend of the demo.
#[derive(Default)]
pub struct RestStore {
    items: Mutex<HashMap<u64, Bytes>>,
    next: AtomicU64,
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn not_found() -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, "{\"error\":\"no such item\"}\n")
}

impl RestStore {
    fn items(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Bytes>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.items().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `path` is this resource's.
    pub fn owns(path: &str) -> bool {
        path == "/items" || path.starts_with("/items/")
    }

    /// Serves a request for `/items` or `/items/{id}`.
    pub async fn handle(&self, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let id = parts
            .uri
            .path()
            .strip_prefix("/items/")
            .map(|s| s.trim_end_matches('/'));
        let body = match Limited::new(body, MAX_ITEM).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "{\"error\":\"body too large or unreadable\"}\n",
                );
            }
        };
        let Some(id) = id else {
            return match parts.method {
                Method::POST => self.create(body),
                Method::GET => reply(StatusCode::OK, format!("{{\"count\":{}}}\n", self.len())),
                _ => reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{\"error\":\"use GET or POST\"}\n",
                ),
            };
        };
        let Ok(id) = id.parse::<u64>() else {
            return not_found();
        };
        match parts.method {
            Method::GET => match self.items().get(&id) {
                Some(item) => reply(StatusCode::OK, item.clone()),
                None => not_found(),
            },
            Method::PUT => match self.items().get_mut(&id) {
                Some(item) => {
                    *item = body;
                    reply(StatusCode::OK, format!("{{\"id\":\"{id}\"}}\n"))
                }
                None => not_found(),
            },
            Method::DELETE => match self.items().remove(&id) {
                Some(_) => {
                    let mut r = reply(StatusCode::NO_CONTENT, Bytes::new());
                    r.headers_mut().remove(header::CONTENT_TYPE);
                    r
                }
                None => not_found(),
            },
            _ => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "{\"error\":\"use GET, PUT or DELETE\"}\n",
            ),
        }
    }

    fn create(&self, body: Bytes) -> Response<Full<Bytes>> {
        let id = self.next.fetch_add(1, Relaxed) + 1;
        self.items().insert(id, body);
        let mut r = reply(StatusCode::CREATED, format!("{{\"id\":\"{id}\"}}\n"));
        if let Ok(v) = http::HeaderValue::from_str(&format!("/items/{id}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }
}
