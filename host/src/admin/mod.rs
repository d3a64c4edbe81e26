//! The admin HTTP API on its own listener (loopback by default): metrics,
//! liveness and readiness, and JSON views of the proxy's state.
//!
//! | Path | What |
//! |---|---|
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 while serving, 503 while draining |
//! | `GET /admin/backends` | each upstream's backends: health, ejection, weight, in-flight, EWMA, counters |
//! | `GET /admin/plugins` | each plugin: kind, file, content hash, loaded at, calls, failures, last error, swaps, quarantine |
//! | `POST /admin/plugins/{name}/reload` | reload a plugin from its file now; the old version keeps serving if it fails |
//! | `GET /admin/config` | the config in force (version, files, loaded at), the last reload's result, errors and changes |
//! | `POST /admin/config/reload` | reload the config now |
//! | `GET /admin/alerts` | pending and firing alerts, and recently resolved ones |
//! | `GET /admin/optimizer` | knob values in force, bounds, the last decisions and their reasons |
//! | `GET /admin/snapshot` | the snapshot alert rules and optimizers are given, as JSON |
//! | `GET /` | the live dashboard (a page embedded in the binary) |
//! | `GET /admin/dashboard` | everything the dashboard shows, as JSON |
//! | `GET /admin/events` | the same, as Server-Sent Events, once a second |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod bench;
mod dashboard;

use crate::balance::BackendView;
use crate::plugins::Reloaded;
use crate::server::{ReloadOutcome, Server, Trigger};
use crate::telemetry::names;

/// Admin bodies: whole (JSON, text) or streamed (the dashboard's events).
pub type AdminBody = UnsyncBoxBody<Bytes, Infallible>;
type AdminResponse = Response<AdminBody>;

/// A serving admin listener.
pub struct AdminHandle {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AdminHandle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}

pub fn serve(tcp: TcpListener, server: Arc<Server>) -> std::io::Result<AdminHandle> {
    let addr = tcp.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = tokio::select! {
                accepted = tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("admin accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let server = server.clone();
            let service = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(handle(req, &server).await) }
            });
            let conn = graceful.watch(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), graceful.shutdown()).await;
    });
    Ok(AdminHandle { addr, stop, task })
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> AdminResponse {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode JSON: {e}\n"),
        ),
    }
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether the request carries the configured bearer token (compared in
/// constant time); true when no token is configured.
fn authorized(req: &Request<Incoming>, server: &Server) -> bool {
    let loaded = server.loaded.load();
    let Some(token) = &loaded.config.admin.token else {
        return true;
    };
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.0.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn handle(req: Request<Incoming>, server: &Arc<Server>) -> AdminResponse {
    // The dashboard's page holds no data, and a browser cannot send a
    // bearer token with a navigation: it is served to anyone, and asks for
    // the token before it reads anything.
    if req.method() == Method::GET && req.uri().path() == "/" {
        return dashboard::page();
    }
    if !authorized(&req, server) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: this admin API needs Authorization: Bearer <admin.token>\n",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"switchyard admin\""),
        );
        return r;
    }
    let path = req.uri().path().trim_end_matches('/');
    if let (&Method::POST, Some(name)) = (req.method(), plugin_reload_target(path)) {
        return reload_plugin(server, name).await;
    }
    if let (&Method::GET, Some(id)) = (req.method(), path.strip_prefix("/admin/bench/")) {
        return bench_run(server, id, req.uri().query());
    }
    if (req.method(), path) == (&Method::POST, "/admin/bench") {
        return start_bench(server, req).await;
    }
    match (req.method(), path) {
        (&Method::GET, "/admin/events") => dashboard::events(server.clone()),
        (&Method::GET, "/admin/dashboard") => json(StatusCode::OK, &dashboard::state(server)),
        (&Method::GET, "/metrics") => {
            let mut r = text(StatusCode::OK, exposition(server));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if server.is_draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/admin/backends") => json(StatusCode::OK, &backends_view(server)),
        (&Method::GET, "/admin/plugins") => json(StatusCode::OK, &server.plugins.load().views()),
        (&Method::GET, "/admin/config") => json(StatusCode::OK, &config_view(server)),
        (&Method::GET, "/admin/alerts") => {
            let (active, resolved) = server.alerts.view();
            json(
                StatusCode::OK,
                &serde_json::json!({ "active": active, "resolved": resolved }),
            )
        }
        (&Method::GET, "/admin/optimizer") => json(StatusCode::OK, &optimizer_view(server)),
        (&Method::GET, "/admin/snapshot") => json(StatusCode::OK, &server.snapshot()),
        (&Method::GET, "/admin/metrics") => metrics_export(server, req.uri().query()),
        (&Method::POST, "/admin/config/reload") => reload_config(server).await,
        (&Method::GET, "/admin/cache") => json(StatusCode::OK, &cache_view(server)),
        (&Method::DELETE, "/admin/cache") => purge_cache(server, req.uri().query()),
        (
            _,
            "/metrics" | "/healthz" | "/readyz" | "/admin/backends" | "/admin/plugins"
            | "/admin/config",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("not found; see {}\n", ENDPOINTS.join(", ")),
        ),
    }
}

/// `GET /admin/cache`: the cache's counters, size and hit ratio.
fn cache_view(server: &Server) -> serde_json::Value {
    let store = server.state.load().cache.clone();
    let c = &store.counters;
    let (hits, misses) = (c.hits.load(Relaxed), c.misses.load(Relaxed));
    let looked_up = hits + misses;
    serde_json::json!({
        "capacity_bytes": store.capacity(),
        "bytes": store.bytes(),
        "entries": store.entries(),
        "hit_ratio": if looked_up == 0 { 0.0 } else { hits as f64 / looked_up as f64 },
        "counters": &**c,
        "shared_tier": store.l2.as_ref().map(|l| serde_json::json!({
            "url": l.url(),
            "hits": l.hits.load(Relaxed),
            "errors": l.errors(),
        })),
    })
}

/// `DELETE /admin/cache?key=K`, `?prefix=P` or `?tag=T`: purges and says
/// how many keys went.
fn purge_cache(server: &Server, query: Option<&str>) -> AdminResponse {
    let store = server.state.load().cache.clone();
    let pairs: Vec<(String, String)> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let purged = match pairs.first().map(|(k, v)| (k.as_str(), v.as_str())) {
        Some(("key", k)) => u64::from(store.purge_key(k)),
        Some(("prefix", p)) => store.purge_prefix(p),
        Some(("tag", t)) => store.purge_tag(t),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "purge with ?key=HOST/PATH, ?prefix=HOST/PATH or ?tag=TAG\n",
            );
        }
    };
    json(StatusCode::OK, &serde_json::json!({ "purged": purged }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const ENDPOINTS: [&str; 18] = [
    "/ (dashboard)",
    "/admin/dashboard",
    "/admin/events",
    "/metrics",
    "/admin/metrics?format=json|csv",
    "/healthz",
    "/readyz",
    "/admin/backends",
    "/admin/plugins",
    "/admin/config",
    "POST /admin/config/reload",
    "/admin/alerts",
    "/admin/optimizer",
    "/admin/snapshot",
    "POST /admin/bench",
    "/admin/bench/ID[?format=csv|html]",
    "/admin/cache",
    "DELETE /admin/cache?key=|prefix=|tag=",
];

/// What `GET /admin/optimizer` shows: knobs in force, bounds, decisions.
fn optimizer_view(server: &Server) -> serde_json::Value {
    let state = server.state.load();
    let config = &server.loaded.load().config.optimizer;
    let weights: BTreeMap<String, u32> = state
        .upstreams
        .values()
        .flat_map(|up| {
            up.backends
                .iter()
                .map(move |b| (format!("{}/{}", up.name, b.addr), b.weight()))
        })
        .collect();
    serde_json::json!({
        "dry_run": config.dry_run,
        "interval": config.interval,
        "bounds": config.bounds,
        "knobs": {
            "concurrency_limit": state.admission.limit(),
            "in_flight": state.admission.in_flight(),
            "queued": state.admission.queued(),
            "queue": state.admission.classes(),
            "weights": weights,
            "cache_capacity_bytes": state.cache.capacity(),
        },
        // Knobs an optimizer set and still owns: value, owner, when. Any
        // other knob has its config value.
        "owners": server.registry.knobs.all(),
        "decisions": server.optimizer.decisions(),
    })
}

/// What `GET /admin/config` shows: the config in force and the last reload.
fn config_view(server: &Server) -> serde_json::Value {
    let loaded = server.loaded.load();
    serde_json::json!({
        "version": loaded.version,
        "loaded_at": humantime::format_rfc3339_seconds(loaded.loaded_at).to_string(),
        "files": loaded.source.files().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "profile": loaded.source.profile,
        "last_reload": server.reload_status(),
        "config": loaded.config,
    })
}

async fn reload_config(server: &Arc<Server>) -> AdminResponse {
    match server.reload(Trigger::Admin).await {
        Ok(ReloadOutcome::Reloaded { from, to, changes }) => json(
            StatusCode::OK,
            &serde_json::json!({ "result": "reloaded", "from": from, "version": to, "changes": changes }),
        ),
        Ok(ReloadOutcome::Unchanged) => json(
            StatusCode::OK,
            &serde_json::json!({ "result": "unchanged", "version": server.loaded.load().version }),
        ),
        Err(errors) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "result": "failed",
                "version": server.loaded.load().version,
                "errors": errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            }),
        ),
    }
}

/// `NAME` of `/admin/plugins/NAME/reload`.
fn plugin_reload_target(path: &str) -> Option<&str> {
    path.strip_prefix("/admin/plugins/")?
        .strip_suffix("/reload")
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

async fn reload_plugin(server: &Server, name: &str) -> AdminResponse {
    let Some(plugin) = server.plugins.load().get(name).cloned() else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": format!("no plugin named \"{name}\"") }),
        );
    };
    let reloading = plugin.clone();
    match tokio::task::spawn_blocking(move || reloading.reload(true)).await {
        Ok(Ok(outcome)) => {
            let result = match outcome {
                Reloaded::Swapped { .. } => "swapped",
                Reloaded::Unchanged => "unchanged",
            };
            json(
                StatusCode::OK,
                &serde_json::json!({ "result": result, "plugin": plugin.view() }),
            )
        }
        Ok(Err(error)) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({ "result": "failed", "error": error, "plugin": plugin.view() }),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload task failed: {e}\n"),
        ),
    }
}

#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct UpstreamView {
    pub strategy: String,
    pub in_flight: u32,
    pub backends: Vec<BackendView>,
}

fn backends_view(server: &Server) -> BTreeMap<String, UpstreamView> {
    let state = server.state.load();
    state
        .upstreams
        .iter()
        .map(|(name, up)| {
            let view = UpstreamView {
                strategy: up.section.strategy.as_str().to_string(),
                in_flight: up
                    .learned
                    .in_flight
                    .load(std::sync::atomic::Ordering::Relaxed),
                backends: up.backends.iter().map(|b| b.view()).collect(),
            };
            (name.clone(), view)
        })
        .collect()
}

/// State gauges are set at scrape time rather than on every request.
/// `POST /admin/bench`: 202 with the run's id and where to follow it.
async fn start_bench(server: &Arc<Server>, req: Request<Incoming>) -> AdminResponse {
    use http_body_util::BodyExt;
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            );
        }
    };
    let body: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}\n"),
            );
        }
    };
    let own = server.proxy_addr().await;
    let base = server.loaded.load().source.base_dir();
    // Loading the plugin compiles it: off the admin listener's workers.
    let runs = server.bench_runs.clone();
    let started = tokio::task::spawn_blocking(move || runs.start(&body, own, &base)).await;
    match started {
        Ok(Ok(id)) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "id": id, "status": format!("/admin/bench/{id}") }),
        ),
        Ok(Err(bench::Refused::Busy(id))) => text(
            StatusCode::CONFLICT,
            format!("run {id} is still going; one run at a time\n"),
        ),
        Ok(Err(bench::Refused::Bad(why))) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// `GET /admin/bench/ID[?format=csv|html]`.
fn bench_run(server: &Server, id: &str, query: Option<&str>) -> AdminResponse {
    let Some(run) = id.parse().ok().and_then(|id| server.bench_runs.get(id)) else {
        return text(StatusCode::NOT_FOUND, format!("no run {id}\n"));
    };
    let format = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("format=")));
    let (body, content_type): (fn(&crate::loadgen::Report) -> String, _) = match format {
        None | Some("json") => return json(StatusCode::OK, &run),
        Some("csv") => (|r| r.csv(), "text/csv; charset=utf-8"),
        Some("html") => (crate::loadgen::html::page, "text/html; charset=utf-8"),
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unknown format \"{other}\" (known: json, csv, html)\n"),
            );
        }
    };
    match &run.report {
        Some(report) => {
            let mut r = text(StatusCode::OK, body(report));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            r
        }
        None => text(StatusCode::CONFLICT, "no report yet\n"),
    }
}

/// Everything `/metrics` shows: the recorder's series, fresh gauges, and
/// the standard `process_*` series.
fn exposition(server: &Server) -> String {
    refresh_gauges(server);
    let mut text = server.prometheus.render();
    text.push_str(&crate::telemetry::process_exposition());
    text
}

/// `GET /admin/metrics?format=json|csv` (JSON when not given).
fn metrics_export(server: &Server, query: Option<&str>) -> AdminResponse {
    let format = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("format="))
        .unwrap_or("json");
    let rows = crate::telemetry::export::rows(&exposition(server));
    match format {
        "json" => json(StatusCode::OK, &serde_json::json!({ "metrics": rows })),
        "csv" => {
            let mut r = text(StatusCode::OK, crate::telemetry::export::csv(&rows));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            r
        }
        other => text(
            StatusCode::BAD_REQUEST,
            format!("unknown format \"{other}\": expected json or csv\n"),
        ),
    }
}

fn refresh_gauges(server: &Server) {
    let state = server.state.load();
    let mut total_in_flight = 0u64;
    for (name, up) in &state.upstreams {
        for b in up.backends.iter() {
            let v = b.view();
            let labels = [("upstream", name.clone()), ("backend", v.address.clone())];
            total_in_flight += u64::from(v.in_flight);
            metrics::gauge!(names::BACKEND_IN_FLIGHT, &labels).set(f64::from(v.in_flight));
            metrics::gauge!(names::BACKEND_HEALTHY, &labels).set(if v.healthy { 1.0 } else { 0.0 });
            metrics::gauge!(names::BACKEND_EJECTED, &labels).set(if v.ejected { 1.0 } else { 0.0 });
            metrics::gauge!(names::BACKEND_EWMA, &labels).set(v.ewma_latency_us as f64 / 1e6);
            metrics::gauge!(names::BACKEND_WEIGHT, &labels).set(f64::from(v.weight));
        }
    }
    metrics::gauge!(names::IN_FLIGHT).set(total_in_flight as f64);
    metrics::gauge!("switchyard_cache_bytes").set(state.cache.bytes() as f64);
    metrics::gauge!("switchyard_cache_entries").set(state.cache.entries() as f64);
    metrics::gauge!("switchyard_cache_capacity_bytes").set(state.cache.capacity() as f64);
}
