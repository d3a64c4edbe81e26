//! The response cache: an RFC 9111 shared cache as a tower layer in the
//! request path, between routing and admission.
//!
//! Policy decisions (storability, freshness, `Age`, `Vary` matching,
//! `Authorization`, revalidation requests and merging a 304) come from the
//! `http-cache-semantics` crate; this module adds what it leaves to the
//! cache: the store, `stale-while-revalidate` and `stale-if-error`
//! (RFC 5861), request collapsing, invalidation after unsafe methods
//! (RFC 9111 §4.4), `Cache-Status` (RFC 9211), and purging.

mod directives;
mod l2;
mod layer;
mod store;

pub use layer::{Cache, CacheLayer, RouteCache};
pub use store::{CacheCounters, CacheStore, Entry};

use http::HeaderMap;

/// The primary cache key: host, path and query, and the configured request
/// headers, e.g. `example.com/a?b=1` or `example.com/a\naccept-language: de`.
pub fn cache_key(
    host: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    key_headers: &[String],
) -> String {
    let mut key = String::with_capacity(host.len() + path_and_query.len() + 16);
    key.push_str(&host.to_ascii_lowercase());
    key.push_str(path_and_query);
    for name in key_headers {
        key.push('\n');
        key.push_str(name);
        key.push_str(": ");
        for (i, v) in headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                key.push_str(", ");
            }
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    key
}
