//! The `Cache-Control` extensions `http-cache-semantics` does not act on:
//! `stale-while-revalidate` and `stale-if-error` (RFC 5861), and the request
//! directives that forbid serving stale. Malformed directives are ignored one
//! by one, as RFC 9111 §4.2.1 asks.
//!
//! Also what the policy crate is handed, made to read as RFC 9111 and RFC
//! 9213 say: `Age` reduced to its first valid value, directive names
//! lower-cased, a targeted field (`CDN-Cache-Control`…) in place of
//! `Cache-Control`; and the header update a `304` makes.

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
    } else if status == 206 {
        "partial"
    } else if !matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    ) {
        "status"
    } else {
        "no-freshness"
    }
}

/// `Age` as RFC 9111 §5.1 reads it: the first line that is a valid
/// delta-seconds (digits only) counts, the others are ignored; none valid
/// means no `Age`. A value too large to represent is 2^31, as §1.2.2 asks.
pub fn sanitize_age(headers: &mut HeaderMap) {
    let lines = headers.get_all(http::header::AGE);
    let mut count = 0;
    let mut first: Option<u64> = None;
    let mut as_sent = false;
    for v in lines.iter() {
        count += 1;
        let b = v.as_bytes().trim_ascii();
        if first.is_none() && !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
            let parsed = std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            as_sent = parsed.is_some_and(|n| n <= 1 << 31) && b.len() == v.len();
            first = Some(parsed.unwrap_or(1 << 31).min(1 << 31));
        }
    }
    if count == 0 || (count == 1 && as_sent) {
        return;
    }
    headers.remove(http::header::AGE);
    if let Some(age) = first {
        headers.insert(http::header::AGE, http::HeaderValue::from(age));
    }
}

/// A `Cache-Control` value with every directive name lower-cased (names
/// are case-insensitive, RFC 9111 §5.2); `None` when it already is.
fn lowercase_directives(value: &http::HeaderValue) -> Option<http::HeaderValue> {
    let bytes = value.as_bytes();
    // Only the names matter, but an upper-case letter anywhere is rare
    // enough that checking the whole value is the cheap test.
    if !bytes.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let text = value.to_str().ok()?;
    let rewritten: Vec<String> = text
        .split(',')
        .map(|d| match d.split_once('=') {
            Some((name, arg)) => format!("{}={arg}", name.to_ascii_lowercase()),
            None => d.to_ascii_lowercase(),
        })
        .collect();
    http::HeaderValue::from_str(&rewritten.join(",")).ok()
}

/// Lower-cases the directive names of every `Cache-Control` line.
pub fn normalize_cache_control(headers: &mut HeaderMap) {
    let lines: Vec<http::HeaderValue> = headers.get_all(CACHE_CONTROL).iter().cloned().collect();
    if !lines.iter().any(|v| lowercase_directives(v).is_some()) {
        return;
    }
    headers.remove(CACHE_CONTROL);
    for v in lines {
        headers.append(CACHE_CONTROL, lowercase_directives(&v).unwrap_or(v));
    }
}

/// Request fields responses commonly vary on whose values are
/// case-insensitive lists: normalised before `Vary` matching (RFC 9111 §4.1
/// lets a cache normalise values of known identical semantics), so that
/// `gzip, br` and `GZIP,br` select the same stored variant.
const VARY_NORMALIZED: [http::header::HeaderName; 3] = [
    http::header::ACCEPT_ENCODING,
    http::header::ACCEPT_LANGUAGE,
    http::header::ACCEPT_CHARSET,
];

/// Rewrites each of [`VARY_NORMALIZED`] that a request carries as one
/// line: lower case, no whitespace, its lines joined by `,`. A value
/// already in that form is left untouched (no allocation).
pub fn normalize_varying(headers: &mut HeaderMap) {
    for name in VARY_NORMALIZED {
        let mut lines = headers.get_all(&name).iter();
        let Some(first) = lines.next() else { continue };
        let plain = |v: &http::HeaderValue| {
            !v.as_bytes()
                .iter()
                .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace())
        };
        if lines.next().is_none() && plain(first) {
            continue;
        }
        let joined: Vec<u8> = headers
            .get_all(&name)
            .iter()
            .map(|v| {
                v.as_bytes()
                    .iter()
                    .filter(|b| !b.is_ascii_whitespace())
                    .map(u8::to_ascii_lowercase)
                    .collect::<Vec<u8>>()
            })
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join(&b","[..]);
        if let Ok(v) = http::HeaderValue::from_bytes(&joined) {
            headers.insert(name, v);
        }
    }
}

/// The first targeted cache-control field (RFC 9213) of `targets` that a
/// response carries with a valid, non-empty value: its lines joined.
fn targeted_value(headers: &HeaderMap, targets: &[http::HeaderName]) -> Option<http::HeaderValue> {
    targets.iter().find_map(|name| {
        let joined: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let valid = joined.iter().any(|v| {
            v.split(',').any(|d| {
                let name = d.split_once('=').map_or(d, |(n, _)| n).trim();
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        });
        valid
            .then(|| http::HeaderValue::from_str(&joined.join(", ")).ok())
            .flatten()
    })
}

/// The directives of a `Cache-Control` value, split at commas outside
/// quoted strings (`private="a, b"` is one directive).
fn split_quoted(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|d| !d.is_empty());
    out
}

/// The field names of a qualified `private="…"` or `no-cache="…"`
/// (RFC 9111 §5.2.2.4, §5.2.2.7), if `directive` is one.
fn qualified(directive: &str) -> Option<Vec<http::HeaderName>> {
    let (name, arg) = directive.split_once('=')?;
    let name = name.trim().to_ascii_lowercase();
    if name != "private" && name != "no-cache" {
        return None;
    }
    let arg = arg.trim().strip_prefix('"')?.strip_suffix('"')?;
    Some(
        arg.split(',')
            .filter_map(|f| http::HeaderName::from_bytes(f.trim().as_bytes()).ok())
            .collect(),
    )
}

/// Fields a shared cache must not store (`private="…"`) or send without
/// revalidating (`no-cache="…"`): this cache stores neither, and may then
/// store the rest of the response.
pub fn omitted_fields(headers: &HeaderMap) -> Vec<http::HeaderName> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_quoted)
        .filter_map(qualified)
        .flatten()
        .collect()
}

/// The header section the cache decides by, from a stored response's: the
/// first targeted field of `targets` present (`CDN-Cache-Control` and the
/// like, RFC 9213) stands in for `Cache-Control`, and `Expires` is then
/// ignored, as §2.1 asks of a cache on the target list; directive names are
/// lower-cased; and `must-understand` (§5.2.2.3) applied: with a status
/// this cache implements, `no-store` is ignored; with any other, the
/// response is not stored. `None`: the response's own headers decide as
/// they are.
pub fn policy_view(
    headers: &HeaderMap,
    targets: &[http::HeaderName],
    status: u16,
) -> Option<HeaderMap> {
    let targeted = targeted_value(headers, targets);
    let case = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .any(|v| lowercase_directives(v).is_some());
    let must_understand = match &targeted {
        Some(v) => v
            .to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("must-understand")),
        None => has(headers, "must-understand"),
    };
    let has_qualified = !omitted_fields(headers).is_empty();
    if targeted.is_none() && !case && !must_understand && !has_qualified {
        return None;
    }
    let mut view = headers.clone();
    if let Some(value) = targeted {
        view.remove(http::header::EXPIRES);
        view.insert(CACHE_CONTROL, value);
    }
    if has_qualified {
        // The qualified forms restrict fields, not the response: the
        // policy sees the response without them and without the fields
        // (which are not stored).
        for name in omitted_fields(headers) {
            view.remove(name);
        }
        let kept: Vec<String> = view
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(split_quoted)
            .filter(|d| qualified(d).is_none())
            .map(str::to_string)
            .collect();
        view.remove(CACHE_CONTROL);
        if let Ok(v) = http::HeaderValue::from_str(&kept.join(", "))
            && !kept.is_empty()
        {
            view.insert(CACHE_CONTROL, v);
        }
    }
    normalize_cache_control(&mut view);
    if must_understand {
        let kept: Vec<String> = directives(&view)
            .filter(|(n, _)| n != "no-store")
            .map(|(n, v)| match v {
                Some(v) => format!("{n}={v}"),
                None => n,
            })
            .collect();
        let mut value = kept.join(", ");
        if !understood_status(status) {
            value.push_str(", no-store");
        }
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            view.insert(CACHE_CONTROL, v);
        }
    }
    Some(view)
}

/// Statuses whose caching requirements this cache implements (RFC 9111
/// §3, §5.2.2.3): the heuristically cacheable ones and the redirects.
fn understood_status(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a response carries any of the targeted fields (which are for
/// this cache, and are not passed on).
pub fn has_targeted(headers: &HeaderMap, targets: &[http::HeaderName]) -> bool {
    targets.iter().any(|t| headers.contains_key(t))
}

/// Updates stored header fields from a `304` (RFC 9111 §3.2): every field
/// the `304` carries replaces the stored one, but `Content-Length` and the
/// fields that describe the stored content's framing and coding
/// (`Transfer-Encoding`, `Content-Encoding`, `Content-Range`), which still
/// describe the stored body. The stored `Age` is dropped: the `304`'s, if
/// any, is the one that counts now.
pub fn update_from_304(stored: &mut HeaderMap, fresh: &HeaderMap) {
    use http::header;
    let kept = |n: &http::HeaderName| {
        *n == header::CONTENT_LENGTH
            || *n == header::TRANSFER_ENCODING
            || *n == header::CONTENT_ENCODING
            || *n == header::CONTENT_RANGE
    };
    stored.remove(header::AGE);
    let names: Vec<&http::HeaderName> = fresh.keys().filter(|n| !kept(n)).collect();
    for name in names {
        stored.remove(name);
        for v in fresh.get_all(name) {
            stored.append(name.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn varying_fields_normalise_to_one_plain_line() {
        use http::header::{ACCEPT_ENCODING, ACCEPT_LANGUAGE};
        let mut h = HeaderMap::new();
        h.append(ACCEPT_ENCODING, "GZIP, br".parse().unwrap());
        h.append(ACCEPT_ENCODING, " zstd ; q=0.5".parse().unwrap());
        h.append(ACCEPT_LANGUAGE, "en-us".parse().unwrap());
        normalize_varying(&mut h);
        assert_eq!(h.get_all(ACCEPT_ENCODING).iter().count(), 1);
        assert_eq!(h[ACCEPT_ENCODING], "gzip,br,zstd;q=0.5");
        assert_eq!(h[ACCEPT_LANGUAGE], "en-us");
    }

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

    fn lines(name: &'static str, values: &[&'static str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(name, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn age_keeps_the_first_valid_value_and_ignores_the_rest() {
        let age = |values: &[&'static str]| {
            let mut m = lines("age", values);
            sanitize_age(&mut m);
            let got: Vec<String> = m
                .get_all("age")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            got
        };
        assert_eq!(age(&["30"]), ["30"]);
        for bad in [
            "abc",
            "-5",
            "1.5",
            "30s",
            "30;foo=bar",
            "",
            " ",
            "+3",
            "0x1e",
        ] {
            assert!(age(&[bad]).is_empty(), "{bad:?} is ignored");
        }
        assert_eq!(age(&["abc", "20"]), ["20"], "the first valid line");
        assert_eq!(age(&["10", "20"]), ["10"], "duplicates: the first");
        assert_eq!(
            age(&["10, 20"]),
            Vec::<String>::new(),
            "a list is not delta-seconds"
        );
        assert_eq!(age(&["99999999999999999999999"]), ["2147483648"]);
    }

    #[test]
    fn directive_names_are_case_insensitive() {
        let mut m = lines(
            "cache-control",
            &["No-Cache, MAX-AGE=60", "Private=\"Set-Cookie\""],
        );
        normalize_cache_control(&mut m);
        let got: Vec<&str> = m
            .get_all("cache-control")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(got, ["no-cache, max-age=60", "private=\"Set-Cookie\""]);
        assert!(has(&m, "no-cache"));
    }

    #[test]
    fn the_first_targeted_field_replaces_cache_control_and_expires() {
        let targets: Vec<http::HeaderName> = ["switchyard-cache-control", "cdn-cache-control"]
            .iter()
            .map(|n| http::HeaderName::from_static(n))
            .collect();
        let mut m = lines("cache-control", &["no-store"]);
        m.insert("expires", "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap());
        m.insert("cdn-cache-control", "max-age=600".parse().unwrap());
        let view = policy_view(&m, &targets, 200).expect("targeted");
        assert_eq!(view["cache-control"], "max-age=600");
        assert!(view.get("expires").is_none());
        m.insert("switchyard-cache-control", "Max-Age=5".parse().unwrap());
        assert_eq!(
            policy_view(&m, &targets, 200).expect("targeted")["cache-control"],
            "max-age=5"
        );
        // Empty or invalid: the next one, else Cache-Control as it is.
        m.insert("switchyard-cache-control", "=,".parse().unwrap());
        assert_eq!(
            policy_view(&m, &targets, 200).expect("targeted")["cache-control"],
            "max-age=600"
        );
        m.remove("cdn-cache-control");
        assert!(policy_view(&m, &targets, 200).is_none());
        assert!(has_targeted(&m, &targets));
    }

    #[test]
    fn a_304_updates_every_field_but_the_ones_describing_the_stored_body() {
        let mut stored = HeaderMap::new();
        for (n, v) in [
            ("etag", "\"1\""),
            ("content-md5", "old"),
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("content-length", "5"),
            ("content-encoding", "gzip"),
            ("age", "100"),
            ("x-kept", "yes"),
        ] {
            stored.insert(n, v.parse().unwrap());
        }
        let mut fresh = HeaderMap::new();
        for (n, v) in [
            ("etag", "\"2\""),
            ("content-md5", "new"),
            ("date", "Tue, 02 Jan 2024 00:00:00 GMT"),
            ("content-length", "0"),
            ("content-encoding", "br"),
        ] {
            fresh.insert(n, v.parse().unwrap());
        }
        update_from_304(&mut stored, &fresh);
        assert_eq!(stored["etag"], "\"2\"");
        assert_eq!(stored["content-md5"], "new");
        assert_eq!(stored["date"], "Tue, 02 Jan 2024 00:00:00 GMT");
        assert_eq!(stored["content-length"], "5");
        assert_eq!(stored["content-encoding"], "gzip");
        assert_eq!(stored["x-kept"], "yes");
        assert!(stored.get("age").is_none());
    }
}
