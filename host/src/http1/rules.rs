//! The grammar both directions share: how a message's framing headers are
//! read (RFC 9112 §6), how `Connection` is read, and what a valid `Host` is
//! (RFC 9112 §3.2, RFC 3986 §3.2.2).
//!
//! One set of rules for requests from clients and responses from backends,
//! as Pingora's `protocols/http/v1/common.rs` keeps them: a peer on either
//! side cannot frame a message one way for us and another way for the next
//! hop, because the next hop never sees the framing headers it sent — the
//! encoders write framing from the decision made here.

use http::StatusCode;

/// Why a message was refused, and the status a client is answered with
/// (for a backend's response the proxy answers 502 whatever the status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refusal {
    pub const fn bad(reason: &'static str) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }

    pub const fn not_implemented(reason: &'static str) -> Self {
        Refusal {
            status: StatusCode::NOT_IMPLEMENTED,
            reason,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)
    }
}

/// Largest `Content-Length` accepted, in digits: 19 digits always fit a
/// `u64`, so the parse below cannot overflow.
const MAX_LENGTH_DIGITS: usize = 19;

/// A `Content-Length` value: ASCII digits only, as RFC 9110 §8.6 writes it
/// (`1*DIGIT`). No sign, no spaces inside, no list: `+5`, `5,5`, `0x5` and
/// `5 5` are refused, as nginx refuses them. (httparse has already trimmed
/// the optional whitespace around the value.)
pub fn content_length(value: &[u8]) -> Result<u64, Refusal> {
    if value.is_empty() || value.len() > MAX_LENGTH_DIGITS || !value.iter().all(u8::is_ascii_digit)
    {
        return Err(Refusal::bad("invalid content-length"));
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// What the `Transfer-Encoding` lines of a message amount to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Codings {
    /// Any `Transfer-Encoding` line was present.
    pub present: bool,
    /// `chunked` was listed (exactly once, last).
    pub chunked: bool,
}

impl Codings {
    /// Adds one `Transfer-Encoding` line. The only coding this proxy can
    /// carry is `chunked`: any other gets 501 (RFC 9112 §6.1, as nginx
    /// answers), `chunked` twice or an empty list element gets 400.
    pub fn add(&mut self, value: &[u8]) -> Result<(), Refusal> {
        self.present = true;
        for coding in value.split(|b| *b == b',') {
            let coding = coding.trim_ascii();
            if coding.is_empty() {
                return Err(Refusal::bad("empty transfer-coding"));
            }
            if !coding.eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::not_implemented("unsupported transfer-coding"));
            }
            if self.chunked {
                return Err(Refusal::bad("chunked applied more than once"));
            }
            self.chunked = true;
        }
        Ok(())
    }
}

/// What the `Connection` lines of a message ask for. Every line is read:
/// a `close` on any line wins over a `keep-alive` on another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

impl ConnectionTokens {
    pub fn add(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',') {
            let token = token.trim_ascii();
            self.close |= token.eq_ignore_ascii_case(b"close");
            self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
        }
    }

    /// Whether the connection may carry another message: HTTP/1.1 unless
    /// `close`, HTTP/1.0 only with `keep-alive` (RFC 9112 §9.3).
    pub fn persistent(&self, http10: bool) -> bool {
        !self.close && (!http10 || self.keep_alive)
    }
}

/// Whether `list` (a `Connection` value or similar) names `token`.
pub fn lists_token(list: &[u8], token: &str) -> bool {
    list.split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What a byte may be in a host name (RFC 3986 `reg-name`, without
/// percent-encoding): one table lookup per byte on the hot path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HostByte {
    Invalid,
    /// Lower-case letter, digit, `-`, `_`, `~` or a sub-delimiter.
    Plain,
    Upper,
    Dot,
}

const HOST_BYTES: [HostByte; 256] = {
    let mut table = [HostByte::Invalid; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_uppercase() {
            HostByte::Upper
        } else if c == b'.' {
            HostByte::Dot
        } else if c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(
                c,
                b'-' | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
        {
            HostByte::Plain
        } else {
            HostByte::Invalid
        };
        b += 1;
    }
    table
};

/// Checks a `Host` value or a target's authority (`host [":" port]`) and
/// returns it normalized: the host lower-cased, one trailing dot dropped,
/// and the port dropped when it is empty or `default_port`. `Ok(None)`:
/// already normal, use the input as it is (the common case, no
/// allocation).
///
/// Refused, as nginx refuses them: an empty host, userinfo (`user@host`),
/// a character outside RFC 3986's `reg-name` (space, `/`, `\`, `%`, …), a
/// `..`, a malformed IP literal, a port that is not 1–5 digits up to 65535.
pub fn normalize_authority(raw: &[u8], default_port: u16) -> Result<Option<String>, Refusal> {
    if raw.contains(&b'@') {
        return Err(Refusal::bad("userinfo in the authority"));
    }
    let (host, port) = split_host_port(raw)?;
    if host.is_empty() {
        return Err(Refusal::bad("empty host"));
    }
    let mut upper = false;
    if host[0] == b'[' {
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        {
            return Err(Refusal::bad("invalid IP literal in host"));
        }
        upper = inner.iter().any(u8::is_ascii_uppercase);
    } else {
        let mut last = HostByte::Invalid;
        for &b in host {
            let class = HOST_BYTES[b as usize];
            match class {
                HostByte::Invalid => return Err(Refusal::bad("invalid character in host")),
                HostByte::Dot if last == HostByte::Dot => {
                    return Err(Refusal::bad("invalid host"));
                }
                HostByte::Upper => upper = true,
                _ => {}
            }
            last = class;
        }
        if host == b"." {
            return Err(Refusal::bad("invalid host"));
        }
    }
    let port_value = match port {
        None | Some(&[]) => None,
        Some(digits) => {
            if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::bad("invalid port in host"));
            }
            let n = digits
                .iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            if n > 65535 {
                return Err(Refusal::bad("invalid port in host"));
            }
            Some(n as u16)
        }
    };
    let trailing_dot = host.len() > 1 && host.ends_with(b".") && host[0] != b'[';
    let keep_port = port_value.filter(|p| *p != default_port);
    if !upper && !trailing_dot && (port.is_none() || keep_port.is_some()) {
        return Ok(None);
    }
    let host = if trailing_dot {
        &host[..host.len() - 1]
    } else {
        host
    };
    // Checked above: every byte is ASCII.
    let mut out = String::from_utf8_lossy(host).to_ascii_lowercase();
    if let Some(p) = keep_port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    Ok(Some(out))
}

/// `host[:port]` or `[v6]:port` split at the port's colon.
fn split_host_port(raw: &[u8]) -> Result<(&[u8], Option<&[u8]>), Refusal> {
    if raw.first() == Some(&b'[') {
        let end = raw
            .iter()
            .position(|b| *b == b']')
            .ok_or(Refusal::bad("invalid IP literal in host"))?;
        let (host, rest) = raw.split_at(end + 1);
        return match rest {
            [] => Ok((host, None)),
            [b':', port @ ..] => Ok((host, Some(port))),
            _ => Err(Refusal::bad("invalid IP literal in host")),
        };
    }
    Ok(match raw.iter().position(|b| *b == b':') {
        Some(at) => (&raw[..at], Some(&raw[at + 1..])),
        None => (raw, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b"0"), Ok(0));
        assert_eq!(content_length(b"0005"), Ok(5));
        assert_eq!(
            content_length(b"9999999999999999999"),
            Ok(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b"5,5",
            b"5, 5",
            b"0x5",
            b"5 5",
            b"5.0",
            b"99999999999999999999",
        ] {
            assert!(
                content_length(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn only_chunked_once_is_a_transfer_coding_we_carry() {
        let mut c = Codings::default();
        assert_eq!(c.add(b"Chunked"), Ok(()));
        assert!(c.present && c.chunked);
        let status = |v: &[u8]| Codings::default().add(v).map_err(|r| r.status.as_u16());
        assert_eq!(status(b"gzip, chunked"), Err(501));
        assert_eq!(status(b"gzip"), Err(501));
        assert_eq!(status(b"identity"), Err(501));
        assert_eq!(status(b"chunked, chunked"), Err(400));
        assert_eq!(status(b"chunked,"), Err(400));
        assert_eq!(status(b""), Err(400));
        let mut two_lines = Codings::default();
        assert_eq!(two_lines.add(b"chunked"), Ok(()));
        assert_eq!(
            two_lines.add(b"chunked").map_err(|r| r.status.as_u16()),
            Err(400)
        );
    }

    #[test]
    fn connection_tokens_from_every_line() {
        let mut t = ConnectionTokens::default();
        t.add(b"keep-alive");
        t.add(b"x-a, Close");
        assert!(t.close && t.keep_alive && !t.persistent(false));
        let mut t = ConnectionTokens::default();
        assert!(t.persistent(false) && !t.persistent(true));
        t.add(b"Keep-Alive");
        assert!(t.persistent(true));
        assert!(lists_token(b"a, Upgrade ,b", "upgrade"));
        assert!(!lists_token(b"upgraded", "upgrade"));
    }

    #[test]
    fn hosts_are_checked_and_normalized() {
        let n = |raw: &str| normalize_authority(raw.as_bytes(), 80);
        assert_eq!(n("example.com"), Ok(None));
        assert_eq!(n("example.com:8080"), Ok(None));
        assert_eq!(n("127.0.0.1:3000"), Ok(None));
        assert_eq!(n("[::1]:8080"), Ok(None));
        assert_eq!(n("Example.COM"), Ok(Some("example.com".into())));
        assert_eq!(n("example.com:80"), Ok(Some("example.com".into())));
        assert_eq!(n("example.com:"), Ok(Some("example.com".into())));
        assert_eq!(n("example.com."), Ok(Some("example.com".into())));
        assert_eq!(n("EXAMPLE.com.:81"), Ok(Some("example.com:81".into())));
        for bad in [
            "",
            ":80",
            "a b",
            "a/b",
            "a\\b",
            "a%41",
            "user@example.com",
            "a..b",
            ".",
            "example.com:80x",
            "example.com:123456",
            "example.com:65536",
            "[::1",
            "[]",
            "[::1]x",
            "[zz::1]",
        ] {
            assert!(n(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
