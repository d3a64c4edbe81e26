//! Which coding a response gets: `Accept-Encoding` with q-values (RFC 9110
//! §12.5.3) against the route's preference order, and which media types a
//! route compresses.

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

use crate::config::Coding;

/// The coding to answer with, or `None` for identity: the highest q-value
/// among the offered codings, ties going to the earlier in `offered`.
///
/// A coding the field does not name is acceptable only through `*`;
/// `q=0` refuses one; without the field at all, nothing is compressed (a
/// client that says nothing gets what it surely understands, as nginx and
/// Caddy do). An element whose q-value does not parse is ignored.
pub fn negotiate(headers: &HeaderMap, offered: &[Coding]) -> Option<Coding> {
    let mut named = [None::<u16>; 3];
    let mut star = None::<u16>;
    let mut any = false;
    for line in headers.get_all(ACCEPT_ENCODING) {
        let Ok(line) = line.to_str() else { continue };
        for element in line.split(',') {
            let mut params = element.split(';');
            let token = params.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let Some(q) = quality(params) else { continue };
            any = true;
            let slot = if token == "*" {
                &mut star
            } else if let Some(c) = coding_of(token) {
                &mut named[c as usize]
            } else {
                continue;
            };
            // The same coding twice: the higher q-value stands.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    if !any {
        return None;
    }
    let mut best: Option<(Coding, u16)> = None;
    for &c in offered {
        let q = named[c as usize].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((c, q));
        }
    }
    best.map(|(c, _)| c)
}

/// A coding token, case-insensitively; `x-gzip` is gzip (RFC 9110 §8.4.1.3).
pub fn coding_of(token: &str) -> Option<Coding> {
    [
        ("gzip", Coding::Gzip),
        ("x-gzip", Coding::Gzip),
        ("br", Coding::Br),
        ("zstd", Coding::Zstd),
    ]
    .into_iter()
    .find(|(name, _)| token.eq_ignore_ascii_case(name))
    .map(|(_, c)| c)
}

/// The q-value among an element's parameters, in thousandths: 1000 when
/// absent, `None` when malformed (`qvalue = ( "0" [ "." 0*3DIGIT ] ) /
/// ( "1" [ "." 0*3("0") ] )`).
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    for param in params {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        let value = value.trim();
        let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let thousandths = frac
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
        return match whole {
            "0" => Some(thousandths),
            "1" if thousandths == 0 => Some(1000),
            _ => None,
        };
    }
    Some(1000)
}

/// One entry of a route's compressible types: `type/subtype`, `type/*`, or
/// `type/*+suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRange {
    kind: String,
    sub: SubType,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SubType {
    Any,
    Exact(String),
    /// `*+json`, kept as `+json`.
    Suffix(String),
}

impl MediaRange {
    /// `None` when the pattern has no `/`, an empty part, or a `*` type.
    pub fn parse(pattern: &str) -> Option<MediaRange> {
        let p = pattern.trim().to_ascii_lowercase();
        let (kind, sub) = p.split_once('/')?;
        if kind.is_empty() || kind.contains('*') || sub.is_empty() || sub.contains(['/', ';', ' '])
        {
            return None;
        }
        let sub = match sub {
            "*" => SubType::Any,
            s => match s.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('+') && suffix.len() > 1 => {
                    SubType::Suffix(suffix.to_string())
                }
                Some(_) => return None,
                None => SubType::Exact(s.to_string()),
            },
        };
        Some(MediaRange {
            kind: kind.to_string(),
            sub,
        })
    }

    /// Whether a `Content-Type` value (parameters allowed) is in the range.
    pub fn matches(&self, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let Some((kind, sub)) = essence.split_once('/') else {
            return false;
        };
        kind.eq_ignore_ascii_case(&self.kind)
            && match &self.sub {
                SubType::Any => true,
                SubType::Exact(s) => sub.eq_ignore_ascii_case(s),
                SubType::Suffix(s) => {
                    sub.len() > s.len()
                        && sub.is_char_boundary(sub.len() - s.len())
                        && sub[sub.len() - s.len()..].eq_ignore_ascii_case(s)
                }
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

    fn pick(accept: &[&str]) -> Option<Coding> {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(ACCEPT_ENCODING, a.parse().unwrap());
        }
        negotiate(&h, &ALL)
    }

    #[test]
    fn q_values_choose_and_ties_follow_the_preference() {
        assert_eq!(pick(&["gzip, deflate, br, zstd"]), Some(Coding::Zstd));
        assert_eq!(pick(&["gzip;q=1.0, br;q=0.8"]), Some(Coding::Gzip));
        assert_eq!(pick(&["br;q=0.5", "gzip;q=0.9"]), Some(Coding::Gzip));
        assert_eq!(pick(&["GZIP"]), Some(Coding::Gzip));
        assert_eq!(pick(&["x-gzip"]), Some(Coding::Gzip));
        assert_eq!(pick(&["br , gzip"]), Some(Coding::Br));
        assert_eq!(pick(&["*"]), Some(Coding::Zstd));
        assert_eq!(pick(&["*;q=0.5, gzip"]), Some(Coding::Gzip));
    }

    #[test]
    fn q_zero_refuses_and_nothing_acceptable_is_identity() {
        assert_eq!(pick(&["gzip;q=0"]), None);
        assert_eq!(pick(&["gzip;q=0.000, br;q=0.001"]), Some(Coding::Br));
        assert_eq!(pick(&["*;q=0, gzip;q=0.2"]), Some(Coding::Gzip));
        assert_eq!(pick(&["*;q=0"]), None);
        assert_eq!(pick(&["zstd;q=0, *"]), Some(Coding::Br));
        assert_eq!(pick(&["identity"]), None);
        assert_eq!(pick(&["deflate"]), None);
        assert_eq!(pick(&[""]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn malformed_q_values_drop_their_element() {
        assert_eq!(pick(&["gzip;q=2"]), None);
        assert_eq!(pick(&["gzip;q=1.5"]), None);
        assert_eq!(pick(&["gzip;q=0.5555"]), None);
        assert_eq!(pick(&["gzip;q=abc, br"]), Some(Coding::Br));
        assert_eq!(pick(&["gzip;q"]), None);
        assert_eq!(pick(&["gzip; Q=0.5"]), Some(Coding::Gzip));
    }

    #[test]
    fn media_ranges() {
        let r = |p: &str| MediaRange::parse(p).unwrap();
        assert!(r("text/*").matches("text/html; charset=utf-8"));
        assert!(r("application/json").matches("Application/JSON"));
        assert!(!r("application/json").matches("application/jsonx"));
        assert!(r("application/*+json").matches("application/problem+json"));
        assert!(!r("application/*+json").matches("application/+json"));
        assert!(!r("application/*+json").matches("text/x+json"));
        assert!(!r("text/*").matches("image/png"));
        assert!(!r("text/*").matches("garbage"));
        for bad in ["text", "*/*", "/json", "text/", "text/*json", "a/b/c"] {
            assert_eq!(MediaRange::parse(bad), None, "{bad}");
        }
    }
}
