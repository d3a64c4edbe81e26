//! The config file's schema: every section and key, with its default.
//!
//! Unknown keys are rejected (`deny_unknown_fields`) so a typo never silently
//! falls back to a default. Cross-field rules (a route's upstream exists, a
//! backend is listed once, an interval is not zero) live in `validate`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use super::types::{BackendAddr, ByteSize, Dur, HashKey, ListenAddr, StatusRange};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub log: LogSection,
    pub listen: ListenSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default)]
    pub upstream_defaults: UpstreamDefaults,
    #[serde(default)]
    pub plugin_runtime: PluginRuntimeSection,
    #[serde(default)]
    pub plugins: Vec<PluginSection>,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub admission: AdmissionSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub compression: CompressionSection,
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSection>,
    /// An HTTPS listener beside the plain one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// Certificates obtained and renewed over ACME (RFC 8555), served by
    /// the HTTPS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeSection>,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default)]
    pub optimizer: OptimizerSection,
    /// Settings of `switchyard bench` that a profile carries; the proxy
    /// itself ignores them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchSection>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Worker threads of the async runtime; 0 means one per core.
    #[serde(default)]
    pub worker_threads: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// A `tracing` filter such as `info` or `switchyard=debug,warn`.
    /// `RUST_LOG` overrides it when set.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    pub address: ListenAddr,
    /// Peers (CIDRs such as `10.0.0.0/8` or `192.0.2.7/32`) whose
    /// `Forwarded` and `X-Forwarded-For` are appended to rather than
    /// replaced: the load balancers in front of this proxy. Empty: trust
    /// no one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_address")]
    pub address: ListenAddr,
    /// Bearer token every admin request must carry; required when
    /// `address` is not loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token (relative paths start at the config
    /// file's directory); read at each load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            address: default_admin_address(),
            token: None,
            token_file: None,
        }
    }
}

/// A secret from the config: never shown. It serializes as a digest, so
/// `GET /admin/config`, diffs and the config version see that it changed
/// but never what it is.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&format!("sha256:{hex}…"))
    }
}

fn default_admin_address() -> ListenAddr {
    ListenAddr(std::net::SocketAddr::from(([127, 0, 0, 1], 9090)))
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    /// TCP connect to a backend.
    pub connect: Dur,
    /// Reading a client's request head (slowloris protection).
    pub header_read: Dur,
    /// One attempt: from sending to a backend until its response headers arrive.
    pub backend_response: Dur,
    /// The whole exchange until response headers, across all retries.
    pub request: Dur,
    /// How long a keep-alive client connection may sit idle between requests.
    pub client_idle: Dur,
    /// On shutdown or listener change, how long in-flight requests may finish.
    pub drain: Dur,
    /// An upgraded connection (WebSocket) closes after this long with no
    /// byte either way.
    pub tunnel_idle: Dur,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        TimeoutsSection {
            connect: Dur::secs(2),
            header_read: Dur::secs(10),
            // A proxy's time to first byte: a stalled backend's requests
            // are retried elsewhere after this, not after half a minute.
            backend_response: Dur::secs(5),
            request: Dur::secs(60),
            client_idle: Dur::secs(60),
            drain: Dur::secs(30),
            // Envoy's idle timeout for upgraded streams and TCP proxying.
            tunnel_idle: Dur::secs(3600),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Total bytes of a request's header section; larger gets 431.
    pub max_header_bytes: usize,
    /// Request body bytes; larger gets 413.
    pub max_body_bytes: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// `*` (any), an exact host `api.example.com`, or a suffix `*.example.com`.
    #[serde(default = "default_route_host")]
    pub host: String,
    #[serde(default = "default_route_prefix")]
    pub path_prefix: String,
    pub upstream: String,
    /// Response caching on this route; default: `cache.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// Request headers that are part of the cache key on this route;
    /// default: `cache.key_headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key_headers: Option<Vec<String>>,
    /// On the plain listener, answer with a permanent redirect (308) to the
    /// same URL over HTTPS instead of proxying. Needs `[tls]`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redirect_https: bool,
    /// Response compression on this route; default: `compression.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<bool>,
    /// Smallest response compressed on this route; default:
    /// `compression.min_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_min_size: Option<ByteSize>,
    /// Media types compressed on this route; default: `compression.types`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_types: Option<Vec<String>>,
    /// Admission class of the route's requests when the proxy is at its
    /// limit: 0 (lowest) to 7, higher served first.
    #[serde(default = "default_priority")]
    pub priority: u8,
}

fn default_priority() -> u8 {
    3
}

impl Default for AdmissionSection {
    fn default() -> Self {
        AdmissionSection {
            max_concurrency: 0,
            queue_size: 1024,
            queue_timeout: Dur::secs(1),
            aging: Dur::millis(100),
            priority_header: None,
        }
    }
}

/// `[tls]`: the HTTPS listener.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub address: ListenAddr,
    /// Certificate chains and their keys (PEM files; relative paths start at
    /// the config file's directory). A client's SNI picks the certificate
    /// whose names match it (exact names first, then wildcards); the first
    /// one serves clients that send no SNI or an unknown name.
    #[serde(default)]
    pub certificates: Vec<CertificateSection>,
    /// The lowest protocol version accepted: `"1.2"` or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Session resumption (tickets, and a session cache for TLS 1.2).
    #[serde(default = "yes")]
    pub session_tickets: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[acme]`: certificates from an ACME CA (RFC 8555) with the HTTP-01
/// challenge, which the plain listener answers.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    /// The CA's directory URL, e.g.
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// Contact URLs for the account, e.g. `mailto:ops@example.com`.
    #[serde(default)]
    pub contact: Vec<String>,
    /// The names the certificate is for.
    pub names: Vec<String>,
    /// Where the account and the certificates are kept (relative paths start
    /// at the config file's directory).
    #[serde(default = "default_acme_storage")]
    pub storage: PathBuf,
    /// A certificate is renewed when it has less than this left.
    #[serde(default = "default_renew_before")]
    pub renew_before: Dur,
    /// How often the certificate's validity is looked at.
    #[serde(default = "default_acme_check")]
    pub check_interval: Dur,
    /// PEM roots trusted for the directory's HTTPS, for a private or test
    /// CA; default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
}

fn default_acme_storage() -> PathBuf {
    PathBuf::from("acme")
}

fn default_renew_before() -> Dur {
    Dur::secs(30 * 24 * 3600)
}

fn default_acme_check() -> Dur {
    Dur::secs(12 * 3600)
}

/// TLS towards an upstream's backends: `tls = true` (system roots, the
/// backend's host as SNI) or a table.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the backend's certificate;
    /// default: the host of the backend's address.
    pub sni: Option<String>,
    /// PEM roots that backend certificates must chain to; default: the
    /// system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate chain and key, for backends that require one
    /// (mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Accept any backend certificate. Logged as a warning at every start
    /// and reload.
    pub insecure_skip_verify: bool,
}

/// The table form of [`UpstreamTls`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTlsTable {
    #[serde(default)]
    sni: Option<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// `tls = true`, `tls = false` or `tls = { … }`.
fn upstream_tls<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<UpstreamTls>, D::Error> {
    struct Either;
    impl<'de> serde::de::Visitor<'de> for Either {
        type Value = Option<UpstreamTls>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("true, false or a table such as { ca = \"ca.pem\" }")
        }
        fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<Self::Value, E> {
            Ok(on.then(UpstreamTls::default))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let t =
                UpstreamTlsTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            Ok(Some(UpstreamTls {
                sni: t.sni,
                ca: t.ca,
                cert: t.cert,
                key: t.key,
                insecure_skip_verify: t.insecure_skip_verify,
            }))
        }
    }
    de.deserialize_any(Either)
}

fn default_route_host() -> String {
    "*".into()
}
fn default_route_prefix() -> String {
    "/".into()
}

/// How an upstream's backends are spoken to.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 over pooled keep-alive connections (and upgrades).
    #[default]
    #[serde(rename = "http1")]
    Http1,
    /// HTTP/2, multiplexed: prior knowledge over cleartext, ALPN `h2` over
    /// TLS (a backend that does not agree fails the connection). gRPC
    /// backends need it.
    #[serde(rename = "h2")]
    H2,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    Weighted,
    LeastConnections,
    LeastResponseTime,
    Hash,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastConnections => "least_connections",
            Strategy::LeastResponseTime => "least_response_time",
            Strategy::Hash => "hash",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
    pub backends: Vec<BackendSection>,
    /// Panic routing, as Envoy's panic threshold: when fewer than this
    /// percent of the backends are available (healthy and not ejected),
    /// traffic is spread over all of them, so that failing health checks
    /// or ejections never leave the site refusing traffic. 0 disables:
    /// then no available backend means 503.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: u32,
    /// For `least_connections` and `least_response_time`: compare two random
    /// backends instead of all. Unset means automatic: on above 16 backends.
    #[serde(default)]
    pub power_of_two_choices: Option<bool>,
    #[serde(default)]
    pub hash: Option<HashSection>,
    /// Active checks; left out, `[upstream_defaults.health]` applies (if set).
    #[serde(default)]
    pub health: Option<HealthSection>,
    /// Left out, `[upstream_defaults.outlier]` applies, else the defaults.
    #[serde(default)]
    pub outlier: Option<OutlierSection>,
    #[serde(default)]
    pub retry: Option<RetrySection>,
    #[serde(default)]
    pub breaker: Option<BreakerSection>,
    /// TLS to the backends: `true`, or a table (`sni`, `ca`, `cert`, `key`,
    /// `insecure_skip_verify`).
    #[serde(
        default,
        deserialize_with = "upstream_tls",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls: Option<UpstreamTls>,
    /// `"http1"` (default) or `"h2"`.
    #[serde(default)]
    pub protocol: Protocol,
}

static DEFAULT_OUTLIER: std::sync::LazyLock<OutlierSection> =
    std::sync::LazyLock::new(OutlierSection::default);
static DEFAULT_RETRY: std::sync::LazyLock<RetrySection> =
    std::sync::LazyLock::new(RetrySection::default);
static DEFAULT_BREAKER: std::sync::LazyLock<BreakerSection> =
    std::sync::LazyLock::new(BreakerSection::default);

impl UpstreamSection {
    /// The effective policies (after `[upstream_defaults]`, which loading
    /// applies; the built-in defaults otherwise).
    pub fn outlier(&self) -> &OutlierSection {
        self.outlier.as_ref().unwrap_or(&DEFAULT_OUTLIER)
    }
    pub fn retry(&self) -> &RetrySection {
        self.retry.as_ref().unwrap_or(&DEFAULT_RETRY)
    }
    pub fn breaker(&self) -> &BreakerSection {
        self.breaker.as_ref().unwrap_or(&DEFAULT_BREAKER)
    }
}

/// Policies for every upstream that does not set its own: HAProxy's
/// `defaults` for upstreams. An upstream's own section replaces the default
/// section as a whole.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDefaults {
    #[serde(default)]
    pub health: Option<HealthSection>,
    #[serde(default)]
    pub outlier: Option<OutlierSection>,
    #[serde(default)]
    pub retry: Option<RetrySection>,
    #[serde(default)]
    pub breaker: Option<BreakerSection>,
}

impl Config {
    /// Applies `[upstream_defaults]` to the upstreams that leave a policy out,
    /// so the config shows the policies in force.
    pub fn apply_upstream_defaults(&mut self) {
        let d = &self.upstream_defaults;
        for up in self.upstreams.values_mut() {
            if up.health.is_none() {
                up.health.clone_from(&d.health);
            }
            up.outlier = up
                .outlier
                .take()
                .or_else(|| d.outlier.clone())
                .or_else(|| Some(OutlierSection::default()));
            up.retry = up
                .retry
                .take()
                .or_else(|| d.retry.clone())
                .or_else(|| Some(RetrySection::default()));
            up.breaker = up
                .breaker
                .take()
                .or_else(|| d.breaker.clone())
                .or_else(|| Some(BreakerSection::default()));
        }
    }
}

/// Least response time (Peak-EWMA × in-flight): a backend that stalls
/// collects in-flight requests and stops being picked at once, where round
/// robin would keep handing it every n-th request.
fn default_strategy() -> Strategy {
    Strategy::LeastResponseTime
}

fn default_panic_threshold() -> u32 {
    50
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    pub address: BackendAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HashSection {
    pub key: HashKey,
    /// Virtual nodes per unit of weight on the ring.
    #[serde(default = "default_virtual_nodes")]
    pub virtual_nodes: u32,
    /// Consistent hashing with bounded loads: no backend takes more than this
    /// factor times the average in-flight load (e.g. 1.25). Unset: unbounded.
    #[serde(default)]
    pub bounded_load: Option<f64>,
}

fn default_virtual_nodes() -> u32 {
    160
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    pub path: String,
    pub interval: Dur,
    /// A check not answered in time fails; unset: 1 s, or the interval if
    /// that is shorter. Never longer than the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    pub expected_statuses: Vec<StatusRange>,
    /// Consecutive passed checks that bring an unhealthy backend back (rise).
    pub healthy_threshold: u32,
    /// Consecutive failed checks that take a healthy backend out (fall).
    pub unhealthy_threshold: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            path: "/healthz".into(),
            interval: Dur::secs(5),
            timeout: None,
            expected_statuses: vec![StatusRange::class(2)],
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

impl HealthSection {
    /// The timeout in force.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
            .map(Dur::get)
            .unwrap_or_else(|| self.interval.get().min(std::time::Duration::from_secs(1)))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierSection {
    /// Consecutive gateway failures — connect failures, broken connections,
    /// timeouts, and 502, 503 or 504 from the backend — that eject it; 0
    /// disables. An application's own errors (500 and the like) do not
    /// count, as in nginx's `max_fails` and Envoy's gateway failures.
    pub consecutive_failures: u32,
    /// Consecutive 5xx of any kind (500 included) that eject a backend; 0
    /// (the default) disables.
    pub consecutive_5xx: u32,
    /// Success-rate ejection (Envoy's): off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateSection>,
    /// Ejection time is this times the number of times the backend was ejected.
    pub base_ejection_time: Dur,
    pub max_ejection_time: Dur,
    /// Never eject more than this percent of an upstream's backends; the
    /// last backend that is not ejected never is.
    pub max_ejection_percent: u32,
}

impl Default for OutlierSection {
    fn default() -> Self {
        OutlierSection {
            consecutive_failures: 5,
            consecutive_5xx: 0,
            success_rate: None,
            base_ejection_time: Dur::secs(30),
            max_ejection_time: Dur::secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Every `interval`, backends whose success rate (responses below 500 over
/// all attempts) falls below the mean of their peers' by more than
/// `stdev_factor` standard deviations are ejected, when at least
/// `min_hosts` backends had `min_requests` attempts in the interval.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SuccessRateSection {
    pub interval: Dur,
    pub min_hosts: u32,
    pub min_requests: u32,
    pub stdev_factor: f64,
}

impl Default for SuccessRateSection {
    fn default() -> Self {
        SuccessRateSection {
            interval: Dur::secs(10),
            min_hosts: 5,
            min_requests: 100,
            stdev_factor: 1.9,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Total tries per request, the first included; 1 disables retries.
    pub attempts: u32,
    /// Retries may add at most this percent on top of requests (over 10 s).
    pub budget_percent: f64,
    /// Retries always allowed per second, so low-traffic upstreams can retry.
    pub min_retries_per_second: u32,
    pub backoff_base: Dur,
    pub backoff_max: Dur,
    /// Retry POST, PATCH and other non-idempotent methods too.
    pub retry_non_idempotent: bool,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            attempts: 2,
            budget_percent: 20.0,
            min_retries_per_second: 10,
            backoff_base: Dur::millis(10),
            backoff_max: Dur::millis(250),
            retry_non_idempotent: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Requests in flight to one backend before it stops taking new ones.
    pub max_in_flight: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            max_in_flight: 10_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginRuntimeSection {
    /// Where compiled plugins are cached; default: `switchyard-plugin-cache`
    /// in the system's temporary directory.
    pub cache_dir: Option<PathBuf>,
    /// Reload a plugin when its file changes.
    pub watch: bool,
    /// Meter fuel so that plugins may set `limits.fuel`. Costs every plugin
    /// call about 10%; takes effect at start, not on reload.
    pub fuel: bool,
    /// Quiet time after the last change to a file before it is reloaded.
    pub debounce: Dur,
    /// A swap to a version whose optimised build is not in the compile
    /// cache serves a Winch (baseline) build first, then the Cranelift
    /// build once it is ready.
    pub baseline_first: bool,
    /// Consecutive failed calls that put a plugin in quarantine.
    pub quarantine_after: u32,
    /// First quarantine; each further one doubles, up to `quarantine_max`.
    pub quarantine_base: Dur,
    pub quarantine_max: Dur,
}

impl Default for PluginRuntimeSection {
    fn default() -> Self {
        PluginRuntimeSection {
            cache_dir: None,
            watch: true,
            fuel: false,
            debounce: Dur::millis(100),
            baseline_first: true,
            quarantine_after: 3,
            quarantine_base: Dur::secs(1),
            quarantine_max: Dur::secs(60),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    OperationGenerator,
    Optimizer,
    AlertRule,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::OperationGenerator => "operation-generator",
            PluginKind::Optimizer => "optimizer",
            PluginKind::AlertRule => "alert-rule",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    pub name: String,
    pub kind: PluginKind,
    /// The `.wasm` component; relative paths start at the config file's directory.
    pub path: PathBuf,
    /// Handed to the plugin's `init`: a string as is, a table as JSON.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub limits: PluginLimits,
}

impl PluginSection {
    /// The config string the plugin's `init` receives.
    pub fn config_string(&self) -> String {
        match &self.config {
            None => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Deadline of one call.
    pub timeout: Dur,
    /// Deadline of instantiation plus `init`, which runs once per instance
    /// and may build an interpreter's whole state (a Python or JavaScript
    /// plugin under the baseline compiler takes hundreds of milliseconds),
    /// so it is not held to the per-call deadline.
    pub init_timeout: Dur,
    /// Linear memory the plugin may grow to.
    pub memory: ByteSize,
    /// Fuel (roughly, wasm instructions) per call; unset: unlimited.
    pub fuel: Option<u64>,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            timeout: Dur::millis(100),
            init_timeout: Dur::secs(10),
            memory: ByteSize(64 << 20),
            fuel: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Length of the snapshot's `current` window; longer windows are 1 m,
    /// 5 m, 30 m, 1 h and 6 h.
    pub current_window: Dur,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            current_window: Dur::secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSection {
    /// Requests in flight through the proxy before new ones wait in the
    /// queue; 0 is no limit. An optimizer may move it within
    /// `[optimizer.bounds]`.
    pub max_concurrency: u32,
    /// Requests that may wait for a place at the limit; 0 answers 503 at
    /// once, as before the queue.
    pub queue_size: u32,
    /// How long a request waits in the queue before a 503.
    pub queue_timeout: Dur,
    /// Waiting this long raises a request one priority class, so low
    /// classes never starve; 0 is strict priority.
    pub aging: Dur,
    /// A request header whose value (0–7) sets the request's class, over
    /// its route's `priority`.
    pub priority_header: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// How often every alert-rule plugin is evaluated.
    pub interval: Dur,
    /// How long resolved alerts stay listed in `GET /admin/alerts`.
    pub resolved_retention: Dur,
    /// Alertmanager-compatible endpoint (`…/api/v2/alerts`) to POST alerts to.
    pub webhook_url: Option<String>,
    pub webhook_timeout: Dur,
    /// Firing alerts are sent again this often (Alertmanager resolves
    /// alerts it stops hearing about).
    pub webhook_repeat: Dur,
    /// Per rule (plugin name): `for` and `keep_firing_for` instead of the
    /// rule's own.
    pub rules: BTreeMap<String, AlertRuleOverride>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            interval: Dur::secs(1),
            resolved_retention: Dur::secs(3600),
            webhook_url: None,
            webhook_timeout: Dur::secs(2),
            webhook_repeat: Dur::secs(60),
            rules: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleOverride {
    #[serde(default, rename = "for")]
    pub for_: Option<Dur>,
    #[serde(default)]
    pub keep_firing_for: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerSection {
    /// How often every optimizer plugin decides.
    pub interval: Dur,
    /// Log what would change without changing it.
    pub dry_run: bool,
    pub bounds: OptimizerBounds,
}

impl Default for OptimizerSection {
    fn default() -> Self {
        OptimizerSection {
            interval: Dur::secs(1),
            dry_run: false,
            bounds: OptimizerBounds::default(),
        }
    }
}

/// The safety bounds on every knob an optimizer moves.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerBounds {
    pub concurrency_limit: Bound,
    pub backend_weight: Bound,
    pub cache_capacity: SizeBound,
}

impl Default for OptimizerBounds {
    fn default() -> Self {
        OptimizerBounds {
            concurrency_limit: Bound {
                min: 4,
                max: 10_000,
                max_step: 200,
            },
            backend_weight: Bound {
                min: 1,
                max: 1000,
                max_step: 100,
            },
            cache_capacity: SizeBound {
                min: ByteSize(1 << 20),
                max: ByteSize(4 << 30),
                max_step: ByteSize(256 << 20),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    pub min: u32,
    pub max: u32,
    /// Largest change per decision.
    pub max_step: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SizeBound {
    pub min: ByteSize,
    pub max: ByteSize,
    pub max_step: ByteSize,
}

/// How `switchyard bench` drives load.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BenchModel {
    /// A fixed number of workers, each issuing its next operation when the
    /// previous one finished.
    #[default]
    Closed,
    /// Operations start at a constant arrival rate, whatever the latency.
    Open,
}

impl BenchModel {
    pub fn as_str(self) -> &'static str {
        match self {
            BenchModel::Closed => "closed",
            BenchModel::Open => "open",
        }
    }
}

/// The shape of one phase of a bench run.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// Moves linearly from the previous phase's level to this one's.
    Ramp,
    /// Holds this phase's level.
    Steady,
    /// Jumps to this phase's level at once and holds it.
    Spike,
}

impl PhaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::Ramp => "ramp",
            PhaseKind::Steady => "steady",
            PhaseKind::Spike => "spike",
        }
    }
}

/// One phase: a duration and a level, which is a rate (open model) or a
/// number of workers (closed model).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhaseSection {
    pub kind: PhaseKind,
    pub duration: Dur,
    /// Operations per second (open model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Concurrent workers (closed model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// `[bench]` in a profile: what `switchyard bench --profile NAME` runs.
/// Command-line flags override each value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenchSection {
    #[serde(default)]
    pub model: BenchModel,
    /// Closed model: workers when a phase names none. Open model: the most
    /// operations in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Handed to the generator's `init` (a table as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<serde_json::Value>,
    /// Bound on each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Extra attempts for a retryable failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Consecutive failed attempts that open the circuit breaker; 0 is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_failures: Option<u32>,
    #[serde(default)]
    pub phases: Vec<PhaseSection>,
}

/// Which entries the response cache evicts first when it is full.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CacheEviction {
    /// Admission by frequency (TinyLFU), eviction by recency: keeps popular
    /// objects through scans.
    #[default]
    Tinylfu,
    Lru,
}

/// `[cache]`: the RFC 9111 shared response cache.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Cache on every route unless a route says `cache = false`.
    pub enabled: bool,
    /// Bound on the stored bytes (bodies and headers).
    pub capacity: ByteSize,
    /// Larger responses stream through uncached.
    pub max_object_size: ByteSize,
    pub eviction: CacheEviction,
    /// Heuristic freshness (RFC 9111 §4.2.2: 10% of the time since
    /// `Last-Modified`) for responses without explicit freshness.
    pub heuristic_freshness: bool,
    /// Request headers that are part of every cache key.
    pub key_headers: Vec<String>,
    /// How long a request waits for an identical one already on its way to
    /// the backend before going itself.
    pub collapse_timeout: Dur,
    /// Accept `PURGE /path` from loopback clients.
    pub purge_method: bool,
    /// Optional shared second tier, e.g. `redis://127.0.0.1:6379/0`.
    pub redis_url: Option<String>,
    /// Targeted cache-control fields (RFC 9213) this cache obeys, first
    /// present wins over `Cache-Control`; they are not passed on.
    pub targeted_cache_control: Vec<String>,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            enabled: false,
            capacity: ByteSize(256 << 20),
            max_object_size: ByteSize(8 << 20),
            eviction: CacheEviction::Tinylfu,
            heuristic_freshness: true,
            key_headers: Vec::new(),
            collapse_timeout: Dur::secs(5),
            purge_method: false,
            redis_url: None,
            targeted_cache_control: vec![
                "Switchyard-Cache-Control".into(),
                "CDN-Cache-Control".into(),
                "Surrogate-Control".into(),
            ],
        }
    }
}

/// A content coding the proxy can apply to responses.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Coding {
    Gzip,
    Br,
    Zstd,
}

impl Coding {
    /// The token `Accept-Encoding` and `Content-Encoding` use.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// `[compression]`: responses compressed for clients that accept it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionSection {
    /// Compress on every route unless a route says `compression = false`.
    pub enabled: bool,
    /// The codings offered, most preferred first: among those a client
    /// accepts with the same q-value, the first listed wins.
    pub algorithms: Vec<Coding>,
    /// Responses whose `Content-Length` is below this pass as they are
    /// (a response of unknown length is compressed).
    pub min_size: ByteSize,
    /// Media types compressed: `type/subtype`, `type/*`, or
    /// `type/*+suffix` (e.g. `application/*+json`).
    pub types: Vec<String>,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub gzip_level: u32,
    /// Brotli quality, 0 to 11.
    pub brotli_level: u32,
    /// zstd level, 1 to 19.
    pub zstd_level: i32,
}

impl Default for CompressionSection {
    fn default() -> Self {
        CompressionSection {
            enabled: false,
            algorithms: vec![Coding::Zstd, Coding::Br, Coding::Gzip],
            min_size: ByteSize(1024),
            types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/*+json",
                "application/*+xml",
                "application/wasm",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            gzip_level: 5,
            brotli_level: 4,
            zstd_level: 3,
        }
    }
}

/// What a shared rate limit does while Redis does not answer.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Each instance applies the whole limit by itself (fail open to the
    /// local limit).
    #[default]
    Local,
    /// Requests the limit covers get 503 (fail closed).
    Deny,
}

/// `[[rate_limits]]`: how often requests may come, per key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Unique; names the limit in headers, metrics and Redis keys.
    pub name: String,
    /// What requests are counted by: any of `client_ip`, `route`,
    /// `header:NAME`, combined; empty is one count for all.
    #[serde(default)]
    pub key: Vec<String>,
    /// Requests per `per`.
    pub rate: u32,
    #[serde(default = "one_second")]
    pub per: Dur,
    /// Requests allowed at once; default: `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Only requests routed to this upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Only requests on this route (its label: `host` + `path_prefix`,
    /// e.g. `*/api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Count what would be refused, refuse nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// Share the limit between instances through this Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(default = "redis_timeout")]
    pub redis_timeout: Dur,
    #[serde(default)]
    pub on_redis_error: OnRedisError,
}

fn one_second() -> Dur {
    Dur::secs(1)
}

fn redis_timeout() -> Dur {
    Dur::millis(50)
}
