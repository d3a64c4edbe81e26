//! Cross-field validation. Collects every problem instead of stopping at the
//! first, so `switchyard check` shows an operator everything to fix at once.

use std::collections::HashMap;

use super::schema::{
    BenchModel, BenchSection, BreakerSection, Config, HealthSection, OutlierSection, PluginKind,
    RetrySection, Strategy, UpstreamSection,
};

/// A problem at a key path; `load` adds which file the key came from.
#[derive(Debug)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn positive(&mut self, key: impl Into<String>, zero: bool) {
        if zero {
            self.add(key, "must be greater than 0");
        }
    }

    fn at_least(&mut self, key: impl Into<String>, value: u64, min: u64) {
        if value < min {
            self.add(key, format!("must be at least {min}"));
        }
    }

    /// `upper` must not be below `lower` (e.g. a max time below its base).
    fn not_below<T: PartialOrd>(
        &mut self,
        key: impl Into<String>,
        upper: T,
        lower: T,
        lower_name: &str,
    ) {
        if upper < lower {
            self.add(key, format!("must be at least {lower_name}"));
        }
    }

    fn at_most(&mut self, key: impl Into<String>, value: f64, max: f64) {
        if value > max {
            self.add(key, format!("must be at most {max}"));
        }
    }
}

/// Largest backend weight; keeps the weighted schedule small.
pub const MAX_WEIGHT: u32 = 1000;

pub fn validate(config: &Config) -> Vec<Problem> {
    let mut p = Problems(Vec::new());

    // Port 0 asks the OS for a free port, so two of them never clash.
    if config.listen.address == config.admin.address && config.listen.address.0.port() != 0 {
        p.add("admin.address", "must differ from listen.address");
    }
    let admin = &config.admin;
    if admin.token.is_some() && admin.token_file.is_some() {
        p.add(
            "admin.token_file",
            "set admin.token or admin.token_file, not both",
        );
    } else if admin.token.as_ref().is_some_and(|t| t.0.trim().is_empty()) {
        p.add("admin.token", "must not be empty");
    } else if admin.token.is_none()
        && admin.token_file.is_none()
        && !admin.address.0.ip().is_loopback()
    {
        p.add(
            "admin.token",
            format!(
                "required when admin.address ({}) is not loopback: anyone who reaches it could reload, purge and read everything; set admin.token or admin.token_file",
                admin.address.0
            ),
        );
    }
    if config.runtime.worker_threads > 1024 {
        p.add(
            "runtime.worker_threads",
            "must be at most 1024 (0 means one per core)",
        );
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        p.add(
            "log.level",
            format!("invalid log filter \"{}\": {e}", config.log.level),
        );
    }

    let t = &config.timeouts;
    for (name, d) in [
        ("connect", t.connect),
        ("header_read", t.header_read),
        ("backend_response", t.backend_response),
        ("request", t.request),
        ("client_idle", t.client_idle),
        ("drain", t.drain),
        ("tunnel_idle", t.tunnel_idle),
    ] {
        p.positive(format!("timeouts.{name}"), d.is_zero());
    }
    p.at_least(
        "limits.max_header_bytes",
        config.limits.max_header_bytes as u64,
        1024,
    );

    validate_routes(config, &mut p);
    validate_tls(config, &mut p);
    validate_cache(config, &mut p);
    validate_compression(config, &mut p);
    validate_admission(config, &mut p);
    validate_rate_limits(config, &mut p);
    validate_plugins(config, &mut p);
    if let Some(bench) = &config.bench {
        p.0.extend(validate_bench(bench));
    }
    validate_loops(config, &mut p);
    for (name, up) in &config.upstreams {
        validate_upstream(name, up, &mut p);
    }
    let d = &config.upstream_defaults;
    validate_policies(
        "upstream_defaults",
        d.health.as_ref(),
        d.outlier.as_ref(),
        d.retry.as_ref(),
        d.breaker.as_ref(),
        &mut p,
    );
    p.0
}

/// Most workers (closed model) or operations in flight (open model) of
/// `switchyard bench`.
pub const MAX_BENCH_CONCURRENCY: u32 = 10_000;

/// Checks a `[bench]` section (from a profile, or as the command line
/// resolved it); keys start with `bench.`.
pub fn validate_bench(b: &BenchSection) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    let range = |p: &mut Problems, key: String, n: u32| {
        if !(1..=MAX_BENCH_CONCURRENCY).contains(&n) {
            p.add(
                key,
                format!("must be between 1 and {MAX_BENCH_CONCURRENCY}"),
            );
        }
    };
    if let Some(c) = b.concurrency {
        range(&mut p, "bench.concurrency".into(), c);
    }
    if let Some(t) = b.timeout {
        p.positive("bench.timeout", t.is_zero());
    }
    for (i, phase) in b.phases.iter().enumerate() {
        let key = format!("bench.phases[{i}]");
        p.positive(format!("{key}.duration"), phase.duration.is_zero());
        match (b.model, phase.rate, phase.concurrency) {
            (BenchModel::Open, Some(rate), None) => {
                if !(0.0..=1e7).contains(&rate) {
                    p.add(format!("{key}.rate"), "must be between 0 and 10000000");
                }
            }
            (BenchModel::Closed, None, Some(c)) => range(&mut p, format!("{key}.concurrency"), c),
            (BenchModel::Open, _, _) => p.add(
                key,
                "an open-model phase needs `rate` (and no `concurrency`)",
            ),
            (BenchModel::Closed, _, _) => p.add(
                key,
                "a closed-model phase needs `concurrency` (and no `rate`)",
            ),
        }
    }
    p.0
}

fn validate_routes(config: &Config, p: &mut Problems) {
    if config.routes.is_empty() {
        p.add(
            "routes",
            "at least one route is required; without one every request gets 404",
        );
    }
    let mut seen: HashMap<(String, &str), usize> = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        if !valid_host_pattern(&route.host) {
            p.add(
                format!("{key}.host"),
                format!(
                    "invalid host pattern \"{}\": expected \"*\", \"*.example.com\" or \"api.example.com\"",
                    route.host
                ),
            );
        }
        if !route.path_prefix.starts_with('/') {
            p.add(
                format!("{key}.path_prefix"),
                format!("must start with \"/\", found \"{}\"", route.path_prefix),
            );
        }
        if !config.upstreams.contains_key(&route.upstream) {
            let defined: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
            let defined = if defined.is_empty() {
                "none".to_string()
            } else {
                defined.join(", ")
            };
            p.add(
                format!("{key}.upstream"),
                format!(
                    "unknown upstream \"{}\" (defined: {defined})",
                    route.upstream
                ),
            );
        }
        match seen.entry((route.host.to_ascii_lowercase(), route.path_prefix.as_str())) {
            std::collections::hash_map::Entry::Occupied(first) => p.add(
                key,
                format!(
                    "duplicate route: same host and path_prefix as routes[{}]",
                    first.get()
                ),
            ),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }
}

/// Request header names that make up cache keys must be header names.
/// `[tls]`, `[acme]` and `redirect_https`: what goes together. The
/// certificate files themselves are read by `crate::tls::Materials`.
fn validate_tls(config: &Config, p: &mut Problems) {
    if let Some(tls) = &config.tls {
        let port = tls.address.0.port();
        if port != 0
            && (tls.address == config.listen.address || tls.address == config.admin.address)
        {
            p.add(
                "tls.address",
                "must differ from listen.address and admin.address",
            );
        }
        if tls.certificates.is_empty() && config.acme.is_none() {
            p.add(
                "tls.certificates",
                "an HTTPS listener needs a certificate: give tls.certificates or an [acme] section",
            );
        }
    }
    if let Some(acme) = &config.acme {
        if config.tls.is_none() {
            p.add(
                "acme",
                "needs a [tls] section: its listener serves the certificate",
            );
        }
        if acme.names.is_empty() {
            p.add("acme.names", "at least one name is required");
        }
        for (i, name) in acme.names.iter().enumerate() {
            let plain = name.strip_prefix("*.").unwrap_or(name);
            if plain.is_empty() || !valid_host_pattern(plain) || plain.contains('*') {
                p.add(
                    format!("acme.names[{i}]"),
                    format!("\"{name}\" is not a DNS name"),
                );
            }
        }
        match acme.directory.parse::<http::Uri>() {
            Ok(uri) if uri.scheme() == Some(&http::uri::Scheme::HTTPS) => {}
            _ => p.add(
                "acme.directory",
                format!("\"{}\" is not an https:// URL", acme.directory),
            ),
        }
        p.positive("acme.check_interval", acme.check_interval.is_zero());
    }
    if config.tls.is_none() {
        for (i, route) in config.routes.iter().enumerate() {
            if route.redirect_https {
                p.add(
                    format!("routes[{i}].redirect_https"),
                    "needs a [tls] section to redirect to",
                );
            }
        }
    }
    for (name, up) in &config.upstreams {
        let Some(tls) = &up.tls else { continue };
        let key = format!("upstreams.{name}.tls");
        if let Some(sni) = &tls.sni
            && rustls::pki_types::ServerName::try_from(sni.as_str()).is_err()
        {
            p.add(
                format!("{key}.sni"),
                format!("\"{sni}\" is not a DNS name or IP address"),
            );
        }
        if tls.insecure_skip_verify && tls.ca.is_some() {
            p.add(
                format!("{key}.ca"),
                "is never used with insecure_skip_verify = true; remove one of them",
            );
        }
    }
}

fn header_names(key: String, names: &[String], p: &mut Problems) {
    for (i, name) in names.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.add(
                format!("{key}[{i}]"),
                format!("invalid header name \"{name}\""),
            );
        }
    }
}

fn validate_cache(config: &Config, p: &mut Problems) {
    let c = &config.cache;
    header_names("cache.key_headers".into(), &c.key_headers, p);
    header_names(
        "cache.targeted_cache_control".into(),
        &c.targeted_cache_control,
        p,
    );
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(names) = &route.cache_key_headers {
            header_names(format!("routes[{i}].cache_key_headers"), names, p);
        }
    }
    if c.max_object_size.0 > c.capacity.0 {
        p.add(
            "cache.max_object_size",
            format!(
                "must not exceed cache.capacity ({}): no such object could be stored",
                c.capacity
            ),
        );
    }
    if let Some(url) = &c.redis_url {
        redis_url("cache.redis_url", url, p);
    }
}

fn redis_url(key: &str, url: &str, p: &mut Problems) {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
        p.add(
            key,
            format!(
                "invalid Redis URL \"{url}\": expected redis://HOST:PORT[/DB], rediss:// or unix://"
            ),
        );
    }
}

fn media_ranges(key: String, types: &[String], p: &mut Problems) {
    for (i, t) in types.iter().enumerate() {
        if crate::compress::MediaRange::parse(t).is_none() {
            p.add(
                format!("{key}[{i}]"),
                format!(
                    "invalid media type \"{t}\": expected type/subtype, type/* or type/*+suffix"
                ),
            );
        }
    }
}

fn validate_rate_limits(config: &Config, p: &mut Problems) {
    let labels: Vec<String> = config
        .routes
        .iter()
        .map(|r| format!("{}{}", r.host, r.path_prefix))
        .collect();
    for (i, l) in config.rate_limits.iter().enumerate() {
        let at = |k: &str| format!("rate_limits[{i}].{k}");
        if l.name.is_empty()
            || !l
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            p.add(at("name"), "must be letters, digits, '-', '_' or '.'");
        }
        if config.rate_limits[..i].iter().any(|o| o.name == l.name) {
            p.add(
                at("name"),
                format!("\"{}\" is used by an earlier limit", l.name),
            );
        }
        p.positive(at("rate"), l.rate == 0);
        p.positive(at("per"), l.per.is_zero());
        p.positive(at("burst"), l.burst == Some(0));
        p.positive(at("redis_timeout"), l.redis_timeout.is_zero());
        for (j, k) in l.key.iter().enumerate() {
            if !crate::ratelimit::valid_key_part(k) {
                p.add(
                    format!("rate_limits[{i}].key[{j}]"),
                    format!("invalid key \"{k}\": expected client_ip, route or header:NAME"),
                );
            }
        }
        if let Some(u) = &l.upstream
            && !config.upstreams.contains_key(u)
        {
            p.add(at("upstream"), format!("no upstream \"{u}\""));
        }
        if let Some(r) = &l.route
            && !labels.contains(r)
        {
            p.add(
                at("route"),
                format!(
                    "no route \"{r}\" (routes are named host + path_prefix: {})",
                    labels.join(", ")
                ),
            );
        }
        if let Some(url) = &l.redis_url {
            redis_url(&at("redis_url"), url, p);
        }
    }
}

fn validate_admission(config: &Config, p: &mut Problems) {
    let a = &config.admission;
    p.positive("admission.queue_timeout", a.queue_timeout.is_zero());
    if let Some(name) = &a.priority_header {
        header_names(
            "admission.priority_header".into(),
            std::slice::from_ref(name),
            p,
        );
    }
    for (i, route) in config.routes.iter().enumerate() {
        if usize::from(route.priority) >= crate::proxy::PRIORITY_CLASSES {
            p.add(
                format!("routes[{i}].priority"),
                "must be between 0 (lowest) and 7 (highest)",
            );
        }
    }
}

fn validate_compression(config: &Config, p: &mut Problems) {
    let c = &config.compression;
    if c.algorithms.is_empty() {
        p.add(
            "compression.algorithms",
            "must name at least one of \"zstd\", \"br\", \"gzip\"",
        );
    }
    for (i, a) in c.algorithms.iter().enumerate() {
        if c.algorithms[..i].contains(a) {
            p.add(
                format!("compression.algorithms[{i}]"),
                format!("\"{}\" is listed twice", a.token()),
            );
        }
    }
    media_ranges("compression.types".into(), &c.types, p);
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(types) = &route.compression_types {
            media_ranges(format!("routes[{i}].compression_types"), types, p);
        }
    }
    if !(1..=9).contains(&c.gzip_level) {
        p.add("compression.gzip_level", "must be between 1 and 9");
    }
    if c.brotli_level > 11 {
        p.add("compression.brotli_level", "must be between 0 and 11");
    }
    if !(1..=19).contains(&c.zstd_level) {
        p.add("compression.zstd_level", "must be between 1 and 19");
    }
}

/// Bounds of a plugin's memory cap; the engine's pool is sized for the top.
pub const PLUGIN_MEMORY_MIN: u64 = 1 << 20;
pub const PLUGIN_MEMORY_MAX: u64 = 1 << 30;

fn validate_plugins(config: &Config, p: &mut Problems) {
    let rt = &config.plugin_runtime;
    p.positive("plugin_runtime.quarantine_after", rt.quarantine_after == 0);
    p.positive(
        "plugin_runtime.quarantine_base",
        rt.quarantine_base.is_zero(),
    );
    p.not_below(
        "plugin_runtime.quarantine_max",
        rt.quarantine_max,
        rt.quarantine_base,
        "quarantine_base",
    );
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, plugin) in config.plugins.iter().enumerate() {
        let key = format!("plugins[{i}]");
        let name = plugin.name.as_str();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p.add(
                format!("{key}.name"),
                "plugin names may use letters, digits, '-' and '_' only",
            );
        }
        if let Some(first) = seen.insert(name, i) {
            p.add(
                format!("{key}.name"),
                format!("duplicate plugin name \"{name}\" (also plugins[{first}])"),
            );
        }
        let l = &plugin.limits;
        p.positive(format!("{key}.limits.timeout"), l.timeout.is_zero());
        if l.timeout.get() > std::time::Duration::from_secs(60) {
            p.add(format!("{key}.limits.timeout"), "must be at most 60s");
        }
        p.positive(
            format!("{key}.limits.init_timeout"),
            l.init_timeout.is_zero(),
        );
        if l.init_timeout.get() > std::time::Duration::from_secs(300) {
            p.add(format!("{key}.limits.init_timeout"), "must be at most 300s");
        }
        if !(PLUGIN_MEMORY_MIN..=PLUGIN_MEMORY_MAX).contains(&l.memory.0) {
            p.add(
                format!("{key}.limits.memory"),
                "must be between 1MiB and 1GiB",
            );
        }
        if l.fuel.is_some() && !rt.fuel {
            p.add(
                format!("{key}.limits.fuel"),
                "needs fuel metering: set plugin_runtime.fuel = true",
            );
        }
        if l.fuel == Some(0) {
            p.add(
                format!("{key}.limits.fuel"),
                "must be greater than 0 (leave it out for no limit)",
            );
        }
    }
}

fn validate_loops(config: &Config, p: &mut Problems) {
    p.positive(
        "telemetry.current_window",
        config.telemetry.current_window.is_zero(),
    );
    if config.telemetry.current_window.get() > std::time::Duration::from_secs(60) {
        p.add("telemetry.current_window", "must be at most 60s");
    }
    let a = &config.alerts;
    p.positive("alerts.interval", a.interval.is_zero());
    p.positive("alerts.webhook_timeout", a.webhook_timeout.is_zero());
    p.positive("alerts.webhook_repeat", a.webhook_repeat.is_zero());
    if let Some(url) = &a.webhook_url {
        match url.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => {}
            _ => p.add(
                "alerts.webhook_url",
                format!("invalid URL \"{url}\": expected http://HOST:PORT/path"),
            ),
        }
    }
    for name in a.rules.keys() {
        let is_rule = config
            .plugins
            .iter()
            .any(|pl| &pl.name == name && pl.kind == PluginKind::AlertRule);
        if !is_rule {
            p.add(
                format!("alerts.rules.{name}"),
                format!("no alert-rule plugin named \"{name}\""),
            );
        }
    }
    let o = &config.optimizer;
    p.positive("optimizer.interval", o.interval.is_zero());
    let b = &o.bounds;
    for (key, bound) in [
        ("concurrency_limit", &b.concurrency_limit),
        ("backend_weight", &b.backend_weight),
    ] {
        let k = format!("optimizer.bounds.{key}");
        p.at_least(format!("{k}.min"), bound.min.into(), 1);
        p.not_below(format!("{k}.max"), bound.max, bound.min, "min");
        p.at_least(format!("{k}.max_step"), bound.max_step.into(), 1);
    }
    p.at_most(
        "optimizer.bounds.backend_weight.max",
        b.backend_weight.max.into(),
        MAX_WEIGHT.into(),
    );
    let c = &b.cache_capacity;
    p.not_below("optimizer.bounds.cache_capacity.max", c.max, c.min, "min");
    p.positive(
        "optimizer.bounds.cache_capacity.max_step",
        c.max_step.0 == 0,
    );
}

fn valid_host_pattern(host: &str) -> bool {
    let name = match host {
        "*" => return true,
        h => h.strip_prefix("*.").unwrap_or(h),
    };
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn validate_upstream(name: &str, up: &UpstreamSection, p: &mut Problems) {
    let key = format!("upstreams.{name}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        p.add(
            &key,
            "upstream names may use letters, digits, '_', '-' and '.' only",
        );
    }
    if up.backends.is_empty() {
        p.add(
            format!("{key}.backends"),
            "at least one backend is required",
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, b) in up.backends.iter().enumerate() {
        let bkey = format!("{key}.backends[{i}]");
        p.at_least(format!("{bkey}.weight"), b.weight.into(), 1);
        p.at_most(format!("{bkey}.weight"), b.weight.into(), MAX_WEIGHT.into());
        if let Some(first) = seen.insert(b.address.as_str(), i) {
            p.add(
                format!("{bkey}.address"),
                format!(
                    "duplicate backend \"{}\" (also backends[{first}])",
                    b.address
                ),
            );
        }
    }

    match (&up.hash, up.strategy) {
        (None, Strategy::Hash) => p.add(
            format!("{key}.hash.key"),
            "missing required key: strategy \"hash\" needs a hash key such as \"header:x-user-id\"",
        ),
        (Some(_), s) if s != Strategy::Hash => p.add(
            format!("{key}.hash"),
            format!("only used with strategy = \"hash\", not \"{}\"", s.as_str()),
        ),
        (Some(h), _) => {
            p.at_least(
                format!("{key}.hash.virtual_nodes"),
                h.virtual_nodes.into(),
                1,
            );
            p.at_most(
                format!("{key}.hash.virtual_nodes"),
                h.virtual_nodes.into(),
                10_000.0,
            );
            if let Some(c) = h.bounded_load
                && !(c > 1.0 && c.is_finite())
            {
                p.add(
                    format!("{key}.hash.bounded_load"),
                    "must be greater than 1.0, such as 1.25",
                );
            }
        }
        _ => {}
    }

    p.at_most(
        format!("{key}.panic_threshold"),
        up.panic_threshold.into(),
        100.0,
    );
    validate_policies(
        &key,
        up.health.as_ref(),
        up.outlier.as_ref(),
        up.retry.as_ref(),
        up.breaker.as_ref(),
        p,
    );
}

/// Checks the policy sections an upstream (or `upstream_defaults`) sets.
fn validate_policies(
    key: &str,
    health: Option<&HealthSection>,
    outlier: Option<&OutlierSection>,
    retry: Option<&RetrySection>,
    breaker: Option<&BreakerSection>,
    p: &mut Problems,
) {
    if let Some(h) = health {
        let hkey = format!("{key}.health");
        p.positive(format!("{hkey}.interval"), h.interval.is_zero());
        if let Some(timeout) = h.timeout {
            p.positive(format!("{hkey}.timeout"), timeout.is_zero());
        }
        if h.timeout.is_some_and(|t| t > h.interval) {
            p.add(
                format!("{hkey}.timeout"),
                format!(
                    "must not exceed interval ({}): checks of one backend would overlap",
                    h.interval
                ),
            );
        }
        if !h.path.starts_with('/') {
            p.add(
                format!("{hkey}.path"),
                format!("must start with \"/\", found \"{}\"", h.path),
            );
        }
        p.at_least(
            format!("{hkey}.healthy_threshold"),
            h.healthy_threshold.into(),
            1,
        );
        p.at_least(
            format!("{hkey}.unhealthy_threshold"),
            h.unhealthy_threshold.into(),
            1,
        );
        if h.expected_statuses.is_empty() {
            p.add(
                format!("{hkey}.expected_statuses"),
                "at least one status is required",
            );
        }
    }
    if let Some(o) = outlier {
        if o.consecutive_failures > 0 || o.consecutive_5xx > 0 || o.success_rate.is_some() {
            p.positive(
                format!("{key}.outlier.base_ejection_time"),
                o.base_ejection_time.is_zero(),
            );
            p.not_below(
                format!("{key}.outlier.max_ejection_time"),
                o.max_ejection_time,
                o.base_ejection_time,
                "base_ejection_time",
            );
        }
        p.at_most(
            format!("{key}.outlier.max_ejection_percent"),
            o.max_ejection_percent.into(),
            100.0,
        );
        if let Some(sr) = &o.success_rate {
            let skey = format!("{key}.outlier.success_rate");
            p.positive(format!("{skey}.interval"), sr.interval.is_zero());
            if sr.interval.get() > std::time::Duration::from_secs(10) {
                p.add(
                    format!("{skey}.interval"),
                    "at most 10s: per-backend figures are kept for the last 10 s",
                );
            }
            p.at_least(format!("{skey}.min_hosts"), sr.min_hosts.into(), 2);
            p.at_least(format!("{skey}.min_requests"), sr.min_requests.into(), 1);
            if !(sr.stdev_factor > 0.0 && sr.stdev_factor.is_finite()) {
                p.add(
                    format!("{skey}.stdev_factor"),
                    "must be greater than 0, such as 1.9",
                );
            }
        }
    }
    if let Some(r) = retry {
        p.at_least(format!("{key}.retry.attempts"), r.attempts.into(), 1);
        p.at_most(format!("{key}.retry.attempts"), r.attempts.into(), 10.0);
        if !(r.budget_percent >= 0.0 && r.budget_percent <= 100.0) {
            p.add(
                format!("{key}.retry.budget_percent"),
                "must be between 0 and 100",
            );
        }
        p.positive(
            format!("{key}.retry.backoff_base"),
            r.backoff_base.is_zero(),
        );
        p.not_below(
            format!("{key}.retry.backoff_max"),
            r.backoff_max,
            r.backoff_base,
            "backoff_base",
        );
    }
    if let Some(b) = breaker {
        p.at_least(
            format!("{key}.breaker.max_in_flight"),
            b.max_in_flight.into(),
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        for ok in ["*", "*.example.com", "api.example.com", "localhost"] {
            assert!(valid_host_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "*.",
            "api.*.com",
            "a..b",
            "*example.com",
            "exa mple.com",
        ] {
            assert!(!valid_host_pattern(bad), "{bad}");
        }
    }
}
