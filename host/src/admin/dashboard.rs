//! The live dashboard: one page embedded in the binary (no build step, no
//! CDN, no charting library: the charts are inline SVG drawn by the page's
//! own script), fed once a second by Server-Sent Events from
//! `GET /admin/events`. Every event is the whole picture, the JSON of
//! `GET /admin/dashboard`, so a page that reconnects or misses an event
//! shows the right thing at the next one.
//!
//! The page itself holds no data, and every request it makes goes through
//! the same admin routes and the same token check as any other client: with
//! `admin.token` set, the page asks for the token and sends it as a bearer
//! header on its event stream and its actions (which is why it reads the
//! stream with `fetch` rather than `EventSource`, which cannot send one).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::{AdminResponse, backends_view, cache_view, config_view, optimizer_view};
use crate::server::Server;

/// The page, served at `/`.
const PAGE: &str = include_str!("dashboard.html");

/// How often the event stream sends the picture.
const EVERY: Duration = Duration::from_secs(1);

/// Decisions and resolved alerts the dashboard lists, newest first.
const RECENT: usize = 20;

pub fn page() -> AdminResponse {
    let mut r = super::text(StatusCode::OK, PAGE);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    r
}

/// Everything the dashboard shows, at this moment.
pub fn state(server: &Server) -> serde_json::Value {
    let (active, mut resolved) = server.alerts.view();
    resolved.truncate(RECENT);
    let mut decisions = server.optimizer.decisions();
    decisions.truncate(RECENT);
    let mut optimizer = optimizer_view(server);
    optimizer["decisions"] = serde_json::to_value(decisions).unwrap_or_default();
    let config = config_view(server);
    serde_json::json!({
        "now": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "snapshot": server.snapshot(),
        "upstreams": backends_view(server),
        "cache": cache_view(server),
        "alerts": { "active": active, "resolved": resolved },
        "optimizer": optimizer,
        "plugins": server.plugins.load().views(),
        "config": {
            "version": config["version"],
            "loaded_at": config["loaded_at"],
            "files": config["files"],
            "last_reload": config["last_reload"],
        },
        "bench": server.bench_runs.latest(),
    })
}

/// `GET /admin/events`: `event: state` with [`state`] now and then every
/// second, until the client goes or the proxy drains.
pub fn events(server: Arc<Server>) -> AdminResponse {
    let ticks = tokio::time::interval(EVERY);
    let stream = futures_util::stream::unfold((server, ticks), |(server, mut ticks)| async move {
        ticks.tick().await;
        if server.is_draining() {
            return None;
        }
        let data = serde_json::to_string(&state(&server)).unwrap_or_else(|e| {
            serde_json::json!({ "error": format!("cannot encode the state: {e}") }).to_string()
        });
        let frame = Frame::data(Bytes::from(format!("event: state\ndata: {data}\n\n")));
        Some((Ok::<_, Infallible>(frame), (server, ticks)))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    r
}
