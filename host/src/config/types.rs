//! Value types used by the config schema: durations, addresses and hash keys.
//!
//! Each type parses from the human-readable string an operator writes and
//! fails with a message that says what form was expected, so a bad value
//! never reaches the running proxy.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::uri::Authority;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `"2s"`, `"500ms"`, `"1m 30s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|_| format!("invalid duration \"{s}\": expected a number and a unit, such as \"2s\" or \"500ms\""))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StringOrNumber::deserialize(d)?;
        match s {
            StringOrNumber::Str(s) => s.parse().map_err(serde::de::Error::custom),
            StringOrNumber::Num(n) => Err(serde::de::Error::custom(format!(
                "invalid duration {n}: a duration needs a unit, such as \"{n}s\" or \"{n}ms\""
            ))),
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    Str(String),
    Num(i64),
}

/// A socket address to listen on, `IP:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse().map(ListenAddr).map_err(|_| {
            format!("invalid address \"{s}\": expected IP:PORT, such as \"127.0.0.1:8080\"")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A backend address, `HOST:PORT` (an IP or a DNS name; the port is required).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr(String);

impl BackendAddr {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The URI authority used to reach this backend.
    pub fn authority(&self) -> Authority {
        // Checked at parse time; a failure here would be a bug in `from_str`.
        Authority::from_str(&self.0).unwrap_or_else(|_| Authority::from_static("invalid:0"))
    }
}

impl FromStr for BackendAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid backend address \"{s}\": expected HOST:PORT, such as \"127.0.0.1:3001\""
            )
        };
        let trimmed = s.trim();
        if trimmed.contains('/') || trimmed.contains('@') {
            return Err(err());
        }
        let auth = Authority::from_str(trimmed).map_err(|_| err())?;
        if auth.port_u16().is_none_or(|p| p == 0) || auth.host().is_empty() {
            return Err(err());
        }
        Ok(BackendAddr(trimmed.to_ascii_lowercase()))
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the `hash` strategy hashes: `header:NAME`, `cookie:NAME`, `path` or `client_ip`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HashKey {
    Header(http::HeaderName),
    Cookie(String),
    Path,
    ClientIp,
}

impl FromStr for HashKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid hash key \"{s}\": expected \"header:NAME\", \"cookie:NAME\", \"path\" or \"client_ip\""
            )
        };
        match s.split_once(':') {
            Some(("header", name)) => http::HeaderName::from_str(name.trim())
                .map(HashKey::Header)
                .map_err(|_| err()),
            Some(("cookie", name)) if !name.trim().is_empty() => {
                Ok(HashKey::Cookie(name.trim().to_string()))
            }
            None if s == "path" => Ok(HashKey::Path),
            None if s == "client_ip" => Ok(HashKey::ClientIp),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Header(h) => write!(f, "header:{h}"),
            HashKey::Cookie(c) => write!(f, "cookie:{c}"),
            HashKey::Path => f.write_str("path"),
            HashKey::ClientIp => f.write_str("client_ip"),
        }
    }
}

/// Serde through `FromStr` and `Display`, so the config and the admin API
/// show values exactly as an operator writes them.
macro_rules! serde_as_string {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}

serde_as_string!(ListenAddr, BackendAddr, HashKey);

/// A set of HTTP statuses written as `"200"`, `"2xx"` or `"200-299"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
    raw: String,
}

impl StatusRange {
    /// All statuses of one class, e.g. `class(2)` is `2xx`.
    pub fn class(class: u16) -> Self {
        StatusRange {
            low: class * 100,
            high: class * 100 + 99,
            raw: format!("{class}xx"),
        }
    }
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl FromStr for StatusRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid status \"{s}\": expected a code (\"200\"), a class (\"2xx\") or a range (\"200-299\") within 100-599"
            )
        };
        let t = s.trim();
        let (low, high) = if let Some(class) = t.strip_suffix("xx") {
            let c: u16 = class.parse().map_err(|_| err())?;
            (c * 100, c * 100 + 99)
        } else if let Some((a, b)) = t.split_once('-') {
            (
                a.trim().parse().map_err(|_| err())?,
                b.trim().parse().map_err(|_| err())?,
            )
        } else {
            let c: u16 = t.parse().map_err(|_| err())?;
            (c, c)
        };
        if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
            return Err(err());
        }
        Ok(StatusRange {
            low,
            high,
            raw: t.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StringOrNumber::deserialize(d)? {
            StringOrNumber::Str(s) => s.parse().map_err(serde::de::Error::custom),
            StringOrNumber::Num(n) => n.to_string().parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

/// A size in bytes, written `"64MiB"`, `"512KiB"`, `"1GiB"`, `"10MB"` or as a
/// plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid size \"{s}\": expected a number of bytes or a number and a unit, such as \"64MiB\""
            )
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| err())?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(err()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StringOrNumber::deserialize(d)? {
            StringOrNumber::Str(s) => s.parse().map_err(serde::de::Error::custom),
            StringOrNumber::Num(n) => u64::try_from(n).map(ByteSize).map_err(|_| {
                serde::de::Error::custom(format!("invalid size {n}: must not be negative"))
            }),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!("250ms".parse::<Dur>(), Ok(Dur::millis(250)));
        assert_eq!("2s".parse::<Dur>(), Ok(Dur::secs(2)));
        assert!("2".parse::<Dur>().is_err());
        assert!("fast".parse::<Dur>().is_err());
    }

    #[test]
    fn backend_addresses_need_a_port() {
        assert!("127.0.0.1:3001".parse::<BackendAddr>().is_ok());
        assert!("api.internal:80".parse::<BackendAddr>().is_ok());
        assert!("127.0.0.1".parse::<BackendAddr>().is_err());
        assert!("127.0.0.1:0".parse::<BackendAddr>().is_err());
        assert!("http://x:80".parse::<BackendAddr>().is_err());
    }

    #[test]
    fn hash_keys() {
        assert_eq!("path".parse::<HashKey>(), Ok(HashKey::Path));
        assert_eq!(
            "cookie:sid".parse::<HashKey>(),
            Ok(HashKey::Cookie("sid".into()))
        );
        assert!("header:x-user".parse::<HashKey>().is_ok());
        assert!("header:".parse::<HashKey>().is_err());
        assert!("ip".parse::<HashKey>().is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("64MiB".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("10MB".parse::<ByteSize>(), Ok(ByteSize(10_000_000)));
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("5 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }

    #[test]
    fn status_ranges() {
        let r: StatusRange = "2xx".parse().unwrap();
        assert!(r.contains(204) && !r.contains(301));
        let r: StatusRange = "200-399".parse().unwrap();
        assert!(r.contains(301));
        assert!("700".parse::<StatusRange>().is_err());
        assert!("300-200".parse::<StatusRange>().is_err());
    }
}
