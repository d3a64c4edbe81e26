//! The cache phase of the request path: answers from the store when it may,
//! revalidates, collapses concurrent misses, stores what it may, and
//! invalidates after unsafe methods.

use crate::http1::tunnel::UpgradeRequested;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, request, response};
use http_body::Body as _;
use http_body_util::BodyExt;
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};
use tower::{Service, ServiceExt};

use crate::proxy::Downstream;

use super::cache_key;
use super::directives::{
    has_targeted, normalize_cache_control, normalize_varying, not_stored_reason, omitted_fields,
    policy_view, request_forbids_stale, sanitize_age, shares_cookies, stale_allowances,
    update_from_304, varies_on_everything,
};
use super::store::{CacheStore, Entry, Parts as EntryParts};
use crate::proxy::{Exchange, ProxyBody, ProxyError, empty_body, text_body};
use crate::telemetry::Windows;

/// Name this cache uses in `Cache-Status` (RFC 9211).
const CACHE_NAME: &str = "Switchyard";

crate::proxy::layer!(CacheLayer, Cache);

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

impl<S> Service<Exchange> for Cache<S>
where
    S: Downstream,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, BoxFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        let upgrade = ex.request.extensions().get::<UpgradeRequested>().is_some();
        let Some(settings) = ex.route.cache.clone().filter(|_| !upgrade) else {
            // An upgrade is never answered from the cache.
            return Either::Left(self.inner.call(ex));
        };
        let store = ex.state.cache.clone();
        let inner = self.inner.clone();
        Either::Right(Box::pin(handle(inner, ex, store, settings)))
    }
}

/// A route's cache settings, resolved from `[cache]` and the route.
#[derive(Clone, Debug)]
pub struct RouteCache {
    pub key_headers: Arc<[String]>,
    /// `cache.targeted_cache_control`, as header names.
    pub targeted: Arc<[header::HeaderName]>,
    pub max_object: u64,
    pub heuristic: bool,
    pub collapse_timeout: Duration,
    pub purge_method: bool,
}

/// The normalized authority the request was routed by: the only host a
/// cache key is ever made from.
fn host_of(req: &Request<ProxyBody>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default()
}

fn path_and_query(req: &Request<ProxyBody>) -> &str {
    req.uri().path_and_query().map_or("/", |pq| pq.as_str())
}

async fn handle<S>(
    inner: S,
    ex: Exchange,
    store: Arc<CacheStore>,
    settings: RouteCache,
) -> Result<Response<ProxyBody>, ProxyError>
where
    S: Downstream,
{
    let method = ex.request.method().clone();
    let host = host_of(&ex.request);
    if method.as_str() == "PURGE" && settings.purge_method {
        return Ok(purge_request(&ex, &store, &host));
    }
    if method != Method::GET && method != Method::HEAD {
        return pass_and_invalidate(inner, ex, &store, &host).await;
    }
    let mut ex = ex;
    // Directive names are case-insensitive (`No-Cache`); the policy reads
    // lower case.
    if ex.request.headers().contains_key(header::CACHE_CONTROL) {
        normalize_cache_control(ex.request.headers_mut());
    }
    normalize_varying(ex.request.headers_mut());
    let key = cache_key(
        &host,
        path_and_query(&ex.request),
        ex.request.headers(),
        &settings.key_headers,
    );
    let now = SystemTime::now();
    let mut stale: Option<(Arc<Entry>, request::Parts)> = None;
    if let Some(variants) = store.get(&key) {
        // The common hit: a plain request for a fresh entry.
        if let Some(e) = variants
            .iter()
            .rev()
            .find(|e| e.plainly_fresh(&ex.request, now))
        {
            hit(&store, &ex.route.windows);
            return Ok(serve_stored(e, &ex.request, now, "hit"));
        }
        for e in variants.iter().rev() {
            match e.policy.before_request(&ex.request, now) {
                BeforeRequest::Fresh(parts) => {
                    hit(&store, &ex.route.windows);
                    return Ok(serve(e, parts, &ex.request, "hit"));
                }
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } => {
                    stale = Some((e.clone(), request));
                    break;
                }
                BeforeRequest::Stale { .. } => {}
            }
        }
    }
    if let Some((entry, revalidation)) = stale {
        return revalidate(inner, ex, &store, &settings, key, entry, revalidation, now).await;
    }
    match store.join_flight(&key) {
        Ok(mut flight) => {
            let waited = tokio::time::timeout(settings.collapse_timeout, async {
                flight
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|o| o.clone())
            })
            .await;
            if let Ok(Some(Some(entry))) = waited
                && let BeforeRequest::Fresh(parts) =
                    entry.policy.before_request(&ex.request, SystemTime::now())
            {
                store.counters.collapsed.fetch_add(1, Relaxed);
                metrics::counter!("switchyard_cache_collapsed_total").increment(1);
                return Ok(serve(&entry, parts, &ex.request, "hit; detail=collapsed"));
            }
            miss(&store, &ex.route.windows);
            fetch(inner, ex, &store, &settings, key)
                .await
                .map(|(resp, _)| resp)
        }
        Err(leader) => {
            if let Some(entry) = store.l2_get(&key).await {
                store.put_local(entry.clone(), None);
                match entry.policy.before_request(&ex.request, SystemTime::now()) {
                    BeforeRequest::Fresh(parts) => {
                        hit(&store, &ex.route.windows);
                        leader.publish(Some(entry.clone()));
                        return Ok(serve(&entry, parts, &ex.request, "hit; detail=shared-tier"));
                    }
                    BeforeRequest::Stale {
                        request,
                        matches: true,
                    } => {
                        drop(leader);
                        let now = SystemTime::now();
                        return revalidate(inner, ex, &store, &settings, key, entry, request, now)
                            .await;
                    }
                    BeforeRequest::Stale { .. } => {}
                }
            }
            miss(&store, &ex.route.windows);
            let (resp, entry) = fetch(inner, ex, &store, &settings, key).await?;
            leader.publish(entry);
            Ok(resp)
        }
    }
}

fn miss(store: &CacheStore, windows: &Windows) {
    windows.record_cache(crate::clock::now_ms(), false);
    store.counters.misses.fetch_add(1, Relaxed);
    metrics::counter!("switchyard_cache_misses_total").increment(1);
}

fn hit(store: &CacheStore, windows: &Windows) {
    windows.record_cache(crate::clock::now_ms(), true);
    store.counters.hits.fetch_add(1, Relaxed);
    metrics::counter!("switchyard_cache_hits_total").increment(1);
}

/// Unsafe methods go through; a non-error response invalidates what is
/// stored for the target URI and its `Location` / `Content-Location`
/// (RFC 9111 §4.4).
async fn pass_and_invalidate<S>(
    inner: S,
    ex: Exchange,
    store: &CacheStore,
    host: &str,
) -> Result<Response<ProxyBody>, ProxyError>
where
    S: Service<Exchange, Response = Response<ProxyBody>, Error = ProxyError>,
{
    let safe = ex.request.method().is_safe();
    let target = format!(
        "{}{}",
        host.to_ascii_lowercase(),
        path_and_query(&ex.request)
    );
    let resp = inner.oneshot(ex).await?;
    if !safe && (resp.status().is_success() || resp.status().is_redirection()) {
        let mut targets = vec![target];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(path) = resp.headers().get(name).and_then(|v| v.to_str().ok())
                && path.starts_with('/')
            {
                targets.push(format!("{}{path}", host.to_ascii_lowercase()));
            }
        }
        for t in targets {
            invalidate(store, &t);
        }
    }
    Ok(resp)
}

/// Drops every variant and key-header combination of `host+path`.
fn invalidate(store: &CacheStore, target: &str) {
    store.purge_key(target);
    store.purge_prefix(&format!("{target}\n"));
}

/// `PURGE /path` from a loopback client: drops that URI's entries.
fn purge_request(ex: &Exchange, store: &CacheStore, host: &str) -> Response<ProxyBody> {
    if !ex.conn.remote.ip().is_loopback() {
        return plain(
            StatusCode::FORBIDDEN,
            "PURGE is accepted from loopback clients only\n",
        );
    }
    let target = format!(
        "{}{}",
        host.to_ascii_lowercase(),
        path_and_query(&ex.request)
    );
    let before = store.counters.purged.load(Relaxed);
    invalidate(store, &target);
    if store.counters.purged.load(Relaxed) > before {
        plain(StatusCode::OK, "purged\n")
    } else {
        plain(StatusCode::NOT_FOUND, "not in the cache\n")
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(text_body(text));
    *r.status_mut() = status;
    r
}

fn with_status(mut resp: Response<ProxyBody>, status: &str) -> Response<ProxyBody> {
    let value = if status == "hit" {
        Ok(HeaderValue::from_static("Switchyard; hit"))
    } else {
        HeaderValue::from_str(&format!("{CACHE_NAME}; {status}"))
    };
    if let Ok(v) = value {
        resp.headers_mut().append("cache-status", v);
    }
    resp
}

/// A response from a stored entry with the headers `parts` carries (the
/// crate's, with `Age` updated); answers the client's own conditional
/// request with 304 when its validator matches.
fn serve(
    e: &Entry,
    parts: response::Parts,
    req: &Request<ProxyBody>,
    status: &str,
) -> Response<ProxyBody> {
    let not_modified = client_validator_matches(req.headers(), &parts.headers);
    let body = if not_modified || req.method() == Method::HEAD {
        empty_body()
    } else {
        http_body_util::Full::new(e.body.clone())
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    let mut parts = parts;
    if e.rewritten {
        // The policy decided by a view of the headers (targeted field,
        // directive case); the client gets the response's own.
        parts.headers.remove(header::CACHE_CONTROL);
        parts.headers.remove(header::EXPIRES);
        for name in [header::CACHE_CONTROL, header::EXPIRES] {
            for v in e.headers.get_all(&name) {
                parts.headers.append(name.clone(), v.clone());
            }
        }
    }
    for name in e.strip.iter() {
        parts.headers.remove(name);
    }
    let range = match (not_modified, req.method() == Method::GET, e.status) {
        (false, true, StatusCode::OK) if req.headers().contains_key(header::RANGE) => {
            byte_range(req.headers(), &parts.headers, e.body.len() as u64)
        }
        _ => Ranged::Whole,
    };
    let mut resp = Response::from_parts(parts, body);
    if not_modified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let len = e.body.len();
    match range {
        Ranged::Whole => {}
        Ranged::Part(first, last) => {
            // RFC 9110 §14.2: one range of a stored full response.
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            *resp.body_mut() =
                http_body_util::Full::new(e.body.slice(first as usize..=last as usize))
                    .map_err(|never| match never {})
                    .boxed_unsync();
            let h = resp.headers_mut();
            h.remove(header::CONTENT_LENGTH);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        Ranged::Unsatisfiable => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            *resp.body_mut() = empty_body();
            let h = resp.headers_mut();
            h.remove(header::CONTENT_LENGTH);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
    }
    with_status(resp, status)
}

/// What a `Range` request gets from a stored full response.
#[derive(Debug, PartialEq, Eq)]
enum Ranged {
    /// The whole response: no usable `Range`, several ranges, or an
    /// `If-Range` that no longer matches (RFC 9110 §13.1.5, §14.2).
    Whole,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// 416: the range starts past the end (or the content is empty).
    Unsatisfiable,
}

/// The one byte range of a request against a stored response of `len`
/// bytes. A `Range` the proxy cannot use is ignored, as §14.2 allows.
fn byte_range(req: &HeaderMap, stored: &HeaderMap, len: u64) -> Ranged {
    let mut lines = req.get_all(header::RANGE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Ranged::Whole;
    };
    if let Some(cond) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let cond = cond.trim();
        let holds = if cond.starts_with('"') {
            // A strong comparison: weak tags never match.
            stored
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|etag| etag.trim() == cond)
        } else {
            stored
                .get(header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|lm| lm.trim() == cond)
        };
        if !holds {
            return Ranged::Whole;
        }
    }
    let Some(spec) = line.to_str().ok().and_then(|v| {
        let (unit, spec) = v.trim().split_once('=')?;
        unit.trim()
            .eq_ignore_ascii_case("bytes")
            .then_some(spec.trim())
    }) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match number(suffix) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part(len.saturating_sub(n), len - 1),
        },
        (first, last) => {
            let Some(first) = number(first) else {
                return Ranged::Whole;
            };
            let last = match last {
                "" => len.saturating_sub(1),
                l => match number(l) {
                    Some(l) if l >= first => l.min(len.saturating_sub(1)),
                    _ => return Ranged::Whole,
                },
            };
            if first >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(first, last)
            }
        }
    }
}

/// A stale entry served as it is (with its current `Age`).
fn serve_stored(
    e: &Entry,
    req: &Request<ProxyBody>,
    now: SystemTime,
    status: &str,
) -> Response<ProxyBody> {
    let mut parts = Response::new(()).into_parts().0;
    parts.status = e.status;
    parts.version = e.version;
    parts.headers = e.headers.clone();
    if let Ok(age) = HeaderValue::from_str(&e.policy.age(now).as_secs().to_string()) {
        parts.headers.insert(header::AGE, age);
    }
    serve(e, parts, req, status)
}

/// `If-None-Match` (weak comparison) or, without it, `If-Modified-Since`.
fn client_validator_matches(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let weak = |s: &str| s.trim().trim_start_matches("W/").to_string();
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm.trim() == "*" || inm.split(',').any(|t| weak(t) == weak(etag));
    }
    let since = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(httpdate);
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(httpdate);
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form senders
/// must generate (RFC 9110 §5.6.7).
fn httpdate(s: &str) -> Option<SystemTime> {
    let mut it = s.split_whitespace();
    let (_, day, month, year, time, gmt) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    if gmt != "GMT" {
        return None;
    }
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == month)? as u64 + 1;
    let (day, year): (u64, u64) = (day.parse().ok()?, year.parse().ok()?);
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe;
    let days = days.checked_sub(719_468)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

/// A copy of the request head, for building policies after the request
/// itself went to the backend.
fn head_of(req: &Request<ProxyBody>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

fn options(settings: &RouteCache) -> CacheOptions {
    CacheOptions {
        shared: true,
        cache_heuristic: if settings.heuristic { 0.1 } else { 0.0 },
        ..CacheOptions::default()
    }
}

/// An exchange like `ex` carrying `parts` (a revalidation request) and no body.
fn sibling(ex: &Exchange, parts: request::Parts) -> Exchange {
    Exchange {
        request: Request::from_parts(parts, empty_body()),
        conn: ex.conn.clone(),
        state: ex.state.clone(),
        route: ex.route.clone(),
        received: Instant::now(),
        deadline: Instant::now() + ex.state.request_timeout(),
        added: Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn revalidate<S>(
    inner: S,
    ex: Exchange,
    store: &Arc<CacheStore>,
    settings: &RouteCache,
    key: String,
    entry: Arc<Entry>,
    revalidation: request::Parts,
    now: SystemTime,
) -> Result<Response<ProxyBody>, ProxyError>
where
    S: Downstream,
{
    let stale_by = entry.stale_by(now);
    let may_serve_stale = !request_forbids_stale(ex.request.headers());
    if may_serve_stale && !entry.swr.is_zero() && stale_by <= entry.swr {
        if store.start_refresh(&key) {
            let (store, settings, bg) =
                (store.clone(), settings.clone(), sibling(&ex, revalidation));
            let (entry, key) = (entry.clone(), key.clone());
            tokio::spawn(async move {
                let head = head_of(&bg.request);
                let _ = refresh(inner, bg, head, &store, &settings, key.clone(), entry).await;
                store.end_refresh(&key);
            });
        }
        store.counters.stale_served.fetch_add(1, Relaxed);
        metrics::counter!("switchyard_cache_stale_served_total").increment(1);
        return Ok(serve_stored(
            &entry,
            &ex.request,
            now,
            "hit; detail=stale-while-revalidate",
        ));
    }
    let head = head_of(&ex.request);
    let reval = sibling(&ex, revalidation);
    match refresh(inner, reval, head, store, settings, key, entry.clone()).await {
        Ok((resp, refreshed)) => {
            let status = resp.status();
            if status.is_server_error() && may_serve_stale && stale_by <= entry.sie {
                return Ok(stale_if_error(
                    store,
                    &entry,
                    &ex.request,
                    now,
                    status.as_u16().to_string(),
                ));
            }
            match refreshed {
                Some(fresh) if status == StatusCode::NOT_MODIFIED => {
                    let parts = match fresh.policy.before_request(&ex.request, SystemTime::now()) {
                        BeforeRequest::Fresh(parts) => parts,
                        BeforeRequest::Stale { .. } => {
                            return Ok(serve_stored(
                                &fresh,
                                &ex.request,
                                SystemTime::now(),
                                "fwd=stale; fwd-status=304",
                            ));
                        }
                    };
                    Ok(serve(
                        &fresh,
                        parts,
                        &ex.request,
                        "fwd=stale; fwd-status=304",
                    ))
                }
                _ => Ok(resp),
            }
        }
        Err(e) if may_serve_stale && stale_by <= entry.sie => {
            tracing::debug!("serving stale after a failed revalidation: {e}");
            Ok(stale_if_error(
                store,
                &entry,
                &ex.request,
                now,
                "error".to_string(),
            ))
        }
        Err(e) => Err(e),
    }
}

fn stale_if_error(
    store: &CacheStore,
    e: &Entry,
    req: &Request<ProxyBody>,
    now: SystemTime,
    why: String,
) -> Response<ProxyBody> {
    store.counters.stale_served.fetch_add(1, Relaxed);
    metrics::counter!("switchyard_cache_stale_served_total").increment(1);
    serve_stored(
        e,
        req,
        now,
        &format!("hit; detail=stale-if-error; fwd-status={why}"),
    )
}

/// Sends a revalidation; a 304 updates the stored entry (same body), a new
/// response replaces it. Returns the backend's response and, on a 304, the
/// updated entry.
async fn refresh<S>(
    inner: S,
    ex: Exchange,
    head: Request<()>,
    store: &CacheStore,
    settings: &RouteCache,
    key: String,
    entry: Arc<Entry>,
) -> Result<(Response<ProxyBody>, Option<Arc<Entry>>), ProxyError>
where
    S: Service<Exchange, Response = Response<ProxyBody>, Error = ProxyError>,
{
    store.counters.revalidations.fetch_add(1, Relaxed);
    metrics::counter!("switchyard_cache_revalidations_total").increment(1);
    let mut resp = inner.oneshot(ex).await?;
    if resp.status() == StatusCode::NOT_MODIFIED {
        // RFC 9111 §4.3.4: the stored headers take the 304's (§3.2), and
        // freshness is worked out again from the result, as of now.
        sanitize_age(resp.headers_mut());
        let updated = updated_entry(&entry, resp.headers(), &head, settings);
        store.put(updated.clone(), Some(&entry));
        return Ok((resp, Some(updated)));
    }
    if resp.status().is_server_error() {
        return Ok((resp, None));
    }
    if head.method() == Method::HEAD
        && resp.status() == StatusCode::OK
        && entry.method == Method::GET
    {
        // A HEAD answer has no body to store: it updates or invalidates
        // the stored GET instead.
        sanitize_age(resp.headers_mut());
        freshen_from_head(store, settings, &key, &head, resp.headers());
        return Ok((resp, None));
    }
    let (resp, _) = store_response(head, resp, store, settings, key, Some(&entry), "stale").await?;
    Ok((resp, None))
}

/// `entry` with the header fields of a `304` (or a `200` to HEAD) merged in
/// (RFC 9111 §3.2, §4.3.4), its freshness worked out again as of now.
fn updated_entry(
    entry: &Entry,
    fields: &HeaderMap,
    head: &Request<()>,
    settings: &RouteCache,
) -> Arc<Entry> {
    let mut headers = entry.headers.clone();
    update_from_304(&mut headers, fields);
    let view = policy_view(&headers, &settings.targeted, entry.status.as_u16());
    let policy = policy_of(
        head,
        entry.status,
        view.as_ref().unwrap_or(&headers),
        SystemTime::now(),
        settings,
    );
    Arc::new(Entry::new(EntryParts {
        key: entry.key.clone(),
        policy,
        status: entry.status,
        version: entry.version,
        strip: targeted_in(&headers, settings),
        headers,
        body: entry.body.clone(),
        vary: entry.vary.clone(),
        method: entry.method.clone(),
        view,
    }))
}

/// RFC 9111 §4.3.5: a `200` to HEAD updates the stored GET responses it
/// could have been chosen for when its validators agree with theirs, and
/// invalidates the URI's entries when they do not (a changed `ETag`,
/// `Last-Modified` or `Content-Length` says the stored body is out of date).
fn freshen_from_head(
    store: &CacheStore,
    settings: &RouteCache,
    key: &str,
    head: &Request<()>,
    resp: &HeaderMap,
) {
    let Some(variants) = store.get(key) else {
        return;
    };
    let chosen = variants.iter().filter(|e| {
        e.method == Method::GET
            && e.vary
                .iter()
                .all(|(n, v)| head.headers().get(n) == v.as_ref())
    });
    for entry in chosen {
        let differs = |name: header::HeaderName| {
            resp.get(&name)
                .is_some_and(|v| entry.headers.get(&name) != Some(v))
        };
        let length_differs = resp
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n != entry.body.len());
        if differs(header::ETAG) || differs(header::LAST_MODIFIED) || length_differs {
            invalidate(store, key);
            return;
        }
        let updated = updated_entry(entry, resp, head, settings);
        store.put(updated, Some(entry));
    }
}

/// Forwards a miss and stores the response when RFC 9111 allows and it fits.
async fn fetch<S>(
    inner: S,
    ex: Exchange,
    store: &CacheStore,
    settings: &RouteCache,
    key: String,
) -> Result<(Response<ProxyBody>, Option<Arc<Entry>>), ProxyError>
where
    S: Service<Exchange, Response = Response<ProxyBody>, Error = ProxyError>,
{
    let head = head_of(&ex.request);
    let mut resp = inner.oneshot(ex).await?;
    if head.method() == Method::HEAD && resp.status() == StatusCode::OK {
        sanitize_age(resp.headers_mut());
        freshen_from_head(store, settings, &key, &head, resp.headers());
    }
    store_response(head, resp, store, settings, key, None, "uri-miss").await
}

/// Stores `resp` (the answer to `head`) when RFC 9111 allows and it fits,
/// replacing `replaces`; returns the response for the client.
async fn store_response(
    head: Request<()>,
    resp: Response<ProxyBody>,
    store: &CacheStore,
    settings: &RouteCache,
    key: String,
    replaces: Option<&Arc<Entry>>,
    why: &str,
) -> Result<(Response<ProxyBody>, Option<Arc<Entry>>), ProxyError> {
    let now = SystemTime::now();
    let mut resp = resp;
    sanitize_age(resp.headers_mut());
    correct_age(resp.headers_mut(), now);
    let view = policy_view(resp.headers(), &settings.targeted, resp.status().as_u16());
    let strip = targeted_in(resp.headers(), settings);
    let policy = policy_of(
        &head,
        resp.status(),
        view.as_ref().unwrap_or(resp.headers()),
        now,
        settings,
    );
    // Targeted fields are for this cache: not passed on.
    let mut resp = resp;
    let mut targeted = HeaderMap::new();
    for name in strip.iter() {
        for v in resp.headers().get_all(name) {
            targeted.append(name.clone(), v.clone());
        }
        resp.headers_mut().remove(name);
    }
    let h = view.as_ref().unwrap_or(resp.headers());
    // A partial response is not stored (RFC 9111 §3.4 would allow combining
    // parts; this cache stores whole responses and serves ranges of them).
    // A response stale on arrival is still worth keeping when it can be
    // revalidated or served stale: `Date` has whole seconds, so `max-age=1`
    // can arrive with `Age: 1`, and its `stale-if-error` must still cover.
    let (swr, sie) = stale_allowances(h);
    let storable = policy.is_storable()
        && resp.status() != StatusCode::PARTIAL_CONTENT
        && !varies_on_everything(h)
        && !shares_cookies(h)
        && (!policy.time_to_live(now).is_zero()
            || has_validator(h)
            || !swr.is_zero()
            || !sie.is_zero());
    if !storable {
        let reason = not_stored_reason(head.headers(), resp.status().as_u16(), h);
        return Ok((
            with_status(resp, &format!("fwd={why}; detail={reason}")),
            None,
        ));
    }
    let declared = resp.body().size_hint().exact();
    if declared.is_some_and(|n| n > settings.max_object) {
        return Ok((
            with_status(resp, &format!("fwd={why}; detail=too-large")),
            None,
        ));
    }
    let (parts, mut body) = resp.into_parts();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BackendBody(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() as u64 > settings.max_object {
                // Too big after all: send what was read, then the rest.
                let rest = Prefixed {
                    first: Some(buf.freeze()),
                    rest: body,
                }
                .boxed_unsync();
                let resp = Response::from_parts(parts, rest);
                return Ok((
                    with_status(resp, &format!("fwd={why}; detail=too-large")),
                    None,
                ));
            }
        }
    }
    let body_bytes = buf.freeze();
    let vary = parts
        .headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| header::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .map(|n| {
            let v = head.headers().get(&n).cloned();
            (n, v)
        })
        .collect();
    let mut stored = parts.headers.clone();
    for (name, value) in &targeted {
        stored.append(name.clone(), value.clone());
    }
    for name in omitted_fields(&stored) {
        stored.remove(name);
    }
    let entry = Arc::new(Entry::new(EntryParts {
        key,
        policy,
        status: parts.status,
        version: parts.version,
        headers: stored,
        body: body_bytes.clone(),
        vary,
        method: head.method().clone(),
        view,
        strip,
    }));
    store.put(entry.clone(), replaces);
    let body = http_body_util::Full::new(body_bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    let resp = Response::from_parts(parts, body);
    Ok((
        with_status(resp, &format!("fwd={why}; stored")),
        Some(entry),
    ))
}

/// The policy for a response of `status` with `headers` to `head`.
fn policy_of(
    head: &Request<()>,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
    settings: &RouteCache,
) -> CachePolicy {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers.clone();
    CachePolicy::new_options(head, &resp, now, options(settings))
}

/// The targeted fields of `settings` that `headers` carries.
fn targeted_in(headers: &HeaderMap, settings: &RouteCache) -> Box<[header::HeaderName]> {
    if !has_targeted(headers, &settings.targeted) {
        return Box::default();
    }
    settings
        .targeted
        .iter()
        .filter(|t| headers.contains_key(*t))
        .cloned()
        .collect()
}

/// RFC 9111 §4.2.3: the initial age is the larger of `Age` and the
/// apparent age (`Date` to arrival). The policy crate counts `Age` only, so
/// a response that waited upstream gets its `Age` raised to what `Date`
/// shows before the policy is built.
fn correct_age(headers: &mut HeaderMap, received: SystemTime) {
    let Some(date) = headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(httpdate)
    else {
        return;
    };
    let apparent = received.duration_since(date).unwrap_or_default().as_secs();
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if apparent > age {
        headers.insert(header::AGE, HeaderValue::from(apparent));
    }
}

fn has_validator(h: &HeaderMap) -> bool {
    h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED)
}

pin_project_lite::pin_project! {
    /// Bytes already read, then the rest of a body.
    struct Prefixed {
        first: Option<Bytes>,
        #[pin]
        rest: ProxyBody,
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = crate::proxy::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        this.rest.poll_frame(cx)
    }
}
