//! The `Cache-Control` extensions `http-cache-semantics` does not act on:
//! `stale-while-revalidate` and `stale-if-error` (RFC 5861), and the request
//! directives that forbid serving stale. Malformed directives are ignored one
//! by one, as RFC 9111 §4.2.1 asks.

use std::time::Duration;

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// `(name, value)` of each directive, names lower-cased.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((n, v)) => (
                    n.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
}

/// A delta-seconds directive; absent or malformed is `None`.
fn seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    directives(headers)
        .filter(|(n, _)| n == name)
        .find_map(|(_, v)| v?.parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn has(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(n, _)| n == name)
}

/// `(stale-while-revalidate, stale-if-error)` of a response; zero when absent.
/// `must-revalidate`, `proxy-revalidate` and `no-cache` forbid both.
pub fn stale_allowances(response: &HeaderMap) -> (Duration, Duration) {
    if ["must-revalidate", "proxy-revalidate", "no-cache"]
        .iter()
        .any(|d| has(response, d))
    {
        return (Duration::ZERO, Duration::ZERO);
    }
    (
        seconds(response, "stale-while-revalidate").unwrap_or_default(),
        seconds(response, "stale-if-error").unwrap_or_default(),
    )
}

/// Whether a request insists on a validated or fresh response.
pub fn request_forbids_stale(request: &HeaderMap) -> bool {
    has(request, "no-cache")
        || seconds(request, "max-age").is_some_and(|d| d.is_zero())
        || (!request.contains_key(CACHE_CONTROL)
            && request
                .get_all(http::header::PRAGMA)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache")))
}

/// A response that sets a cookie without `public`: one user's cookie must
/// never reach another, so it is not stored (not even for revalidation).
pub fn shares_cookies(response: &HeaderMap) -> bool {
    response.contains_key(http::header::SET_COOKIE) && !has(response, "public")
}

/// `Vary: *`: no later request can match it (RFC 9111 §4.1).
pub fn varies_on_everything(response: &HeaderMap) -> bool {
    response.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == b"*")
    })
}

/// Why a response (to `request`) is not stored, for `Cache-Status`.
pub fn not_stored_reason(request: &HeaderMap, status: u16, response: &HeaderMap) -> &'static str {
    if has(request, "no-store") || has(response, "no-store") {
        "no-store"
    } else if has(response, "private") {
        "private"
    } else if request.contains_key(http::header::AUTHORIZATION) {
        "authorization"
    } else if shares_cookies(response) {
        "set-cookie"
    } else if varies_on_everything(response) {
        "vary-star"
    } else if !matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    ) {
        "status"
    } else {
        "no-freshness"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(cc: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(CACHE_CONTROL, cc.parse().unwrap());
        m
    }

    #[test]
    fn stale_extensions_parse_and_ignore_garbage() {
        let s = Duration::from_secs;
        assert_eq!(
            stale_allowances(&h(
                "max-age=60, stale-while-revalidate=30, stale-if-error=600"
            )),
            (s(30), s(600))
        );
        assert_eq!(
            stale_allowances(&h("Stale-While-Revalidate=\"5\"")),
            (s(5), s(0))
        );
        assert_eq!(
            stale_allowances(&h("stale-while-revalidate=abc, stale-if-error=-1, ,,")),
            (s(0), s(0))
        );
        assert_eq!(
            stale_allowances(&h("max-age=1, must-revalidate, stale-if-error=60")),
            (s(0), s(0))
        );
        assert!(request_forbids_stale(&h("no-cache")));
        assert!(request_forbids_stale(&h("max-age=0")));
        assert!(!request_forbids_stale(&h("max-age=10")));
    }
}
