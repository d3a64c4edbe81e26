//! The optional shared second tier in Redis: entries are written through on
//! store and read on a local miss, so instances behind one name share a warm
//! cache. Redis trouble never fails a request: each call is bounded by a
//! short timeout, a failure is counted (`switchyard_cache_l2_errors_total`)
//! and logged once per outage, the cache carries on from memory, and the
//! tier comes back by itself when Redis answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

use super::store::{Entry, Parts as EntryParts};
use crate::redis_link::Link;

/// Bound on each Redis call.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// Kept in Redis this long past freshness (and past the stale allowances),
/// so that an entry with validators can still be revalidated.
const STALE_KEEP: Duration = Duration::from_secs(300);
const MAGIC: &[u8; 4] = b"SYC1";

pub struct L2 {
    link: Link,
    pub hits: AtomicU64,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2").field("url", &self.link.url()).finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    policy: CachePolicy,
    status: u16,
    http10: bool,
    headers: Vec<(String, Vec<u8>)>,
    vary: Vec<(String, Option<Vec<u8>>)>,
    method: String,
    /// What the entry was decided by beyond its headers (see `Entry`);
    /// absent in entries written by older builds.
    #[serde(default)]
    rewritten: bool,
    #[serde(default)]
    strip: Vec<String>,
    #[serde(default)]
    swr_secs: Option<u64>,
    #[serde(default)]
    sie_secs: Option<u64>,
}

fn redis_key(key: &str) -> String {
    format!("switchyard:cache:{key}")
}

fn tag_key(tag: &str) -> String {
    format!("switchyard:tag:{tag}")
}

impl L2 {
    pub fn new(url: &str) -> Arc<L2> {
        Arc::new(L2 {
            link: Link::new(
                url,
                "cache tier".into(),
                "serving from memory only",
                CALL_TIMEOUT,
                metrics::counter!("switchyard_cache_l2_errors_total"),
            ),
            hits: AtomicU64::new(0),
        })
    }

    pub fn url(&self) -> &str {
        self.link.url()
    }

    /// Failed Redis calls so far.
    pub fn errors(&self) -> u64 {
        self.link.errors()
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Option<T> {
        self.link.run(cmd).await
    }

    /// Writes `entry` through, with tags, expiring after its usefulness.
    pub async fn put(&self, entry: &Entry) {
        let Some(bytes) = encode(entry) else {
            return;
        };
        let now = SystemTime::now();
        let keep = entry.policy.time_to_live(now) + entry.swr.max(entry.sie) + STALE_KEEP;
        let key = redis_key(&entry.key);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(bytes)
            .arg("PX")
            .arg(keep.as_millis() as u64);
        if self.run::<()>(set).await.is_none() {
            return;
        }
        for tag in &entry.tags {
            let mut sadd = redis::cmd("SADD");
            sadd.arg(tag_key(tag)).arg(&entry.key);
            let _ = self.run::<()>(sadd).await;
        }
    }

    /// The entry stored under `key`, if any.
    pub async fn get(&self, key: &str) -> Option<Entry> {
        let mut get = redis::cmd("GET");
        get.arg(redis_key(key));
        let bytes: Option<Vec<u8>> = self.run(get).await?;
        let entry = decode(key, &bytes?)?;
        self.hits.fetch_add(1, Relaxed);
        metrics::counter!("switchyard_cache_l2_hits_total").increment(1);
        Some(entry)
    }

    pub async fn delete(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let mut del = redis::cmd("DEL");
        for k in keys {
            del.arg(redis_key(k));
        }
        let _ = self.run::<()>(del).await;
    }

    /// Deletes every key under `prefix` (SCAN, so Redis is never blocked).
    pub async fn delete_prefix(&self, prefix: &str) {
        let pattern = format!("{}*", redis_key(&glob_escape(prefix)));
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500);
            let Some((next, keys)) = self.run::<(u64, Vec<String>)>(scan).await else {
                return;
            };
            if !keys.is_empty() {
                let mut del = redis::cmd("DEL");
                del.arg(keys);
                let _ = self.run::<()>(del).await;
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }

    /// Deletes every key tagged `tag`.
    pub async fn delete_tag(&self, tag: &str) {
        let mut members = redis::cmd("SMEMBERS");
        members.arg(tag_key(tag));
        let Some(keys) = self.run::<Vec<String>>(members).await else {
            return;
        };
        self.delete(&keys).await;
        let mut del = redis::cmd("DEL");
        del.arg(tag_key(tag));
        let _ = self.run::<()>(del).await;
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn encode(entry: &Entry) -> Option<Vec<u8>> {
    let meta = Meta {
        policy: entry.policy.clone(),
        status: entry.status.as_u16(),
        http10: entry.version == Version::HTTP_10,
        headers: entry
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        vary: entry
            .vary
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    v.as_ref().map(|v| v.as_bytes().to_vec()),
                )
            })
            .collect(),
        method: entry.method.as_str().to_string(),
        rewritten: entry.rewritten,
        strip: entry.strip.iter().map(|n| n.as_str().to_string()).collect(),
        swr_secs: Some(entry.swr.as_secs()),
        sie_secs: Some(entry.sie.as_secs()),
    };
    let meta = serde_json::to_vec(&meta).ok()?;
    let mut out = Vec::with_capacity(8 + meta.len() + entry.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&entry.body);
    Some(out)
}

/// A stored entry back from its bytes; anything unreadable is a miss.
fn decode(key: &str, bytes: &[u8]) -> Option<Entry> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let meta: Meta = serde_json::from_slice(rest.get(4..4 + len)?).ok()?;
    let body = Bytes::copy_from_slice(rest.get(4 + len..)?);
    let mut headers = HeaderMap::new();
    for (n, v) in meta.headers {
        headers.append(
            HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_bytes(&v).ok()?,
        );
    }
    let vary = meta
        .vary
        .into_iter()
        .map(|(n, v)| {
            let v = v.and_then(|v| HeaderValue::from_bytes(&v).ok());
            HeaderName::from_bytes(n.as_bytes()).ok().map(|n| (n, v))
        })
        .collect::<Option<Vec<_>>>()?;
    let mut entry = Entry::new(EntryParts {
        key: key.to_string(),
        policy: meta.policy,
        status: StatusCode::from_u16(meta.status).ok()?,
        version: if meta.http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        },
        headers,
        body,
        vary,
        method: http::Method::from_bytes(meta.method.as_bytes()).ok()?,
        view: None,
        strip: meta
            .strip
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect(),
    });
    // Decided by a view of the headers when stored: what it concluded.
    entry.rewritten = meta.rewritten;
    if let (Some(swr), Some(sie)) = (meta.swr_secs, meta.sie_secs) {
        entry.swr = std::time::Duration::from_secs(swr);
        entry.sie = std::time::Duration::from_secs(sie);
    }
    Some(entry)
}
