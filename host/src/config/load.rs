//! Loading: the base file, an optional profile layered on top, then
//! `SWITCHYARD_SECTION__KEY` environment overrides, merged by figment.
//!
//! Every error says which file (or the environment) and which key path it is
//! about, e.g. `config/switchyard.toml: upstreams.app.backends[1].weight: must
//! be at least 1`.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::UncasedStr;
use figment::{Figment, Source};
use sha2::{Digest, Sha256};

use super::schema::{BenchSection, Config};
use super::validate;

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "SWITCHYARD_";

/// Where a config comes from: the base file and an optional profile name.
/// Kept so that a reload reads exactly what the start read.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub profile: Option<String>,
}

impl ConfigSource {
    pub fn new(path: impl Into<PathBuf>, profile: Option<String>) -> Self {
        ConfigSource {
            path: path.into(),
            profile,
        }
    }

    /// `profiles/NAME.toml` next to the base file.
    pub fn profile_path(&self) -> Option<PathBuf> {
        let name = self.profile.as_ref()?;
        Some(self.profiles_dir().join(format!("{name}.toml")))
    }

    fn profiles_dir(&self) -> PathBuf {
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join("profiles")
    }

    /// The files this config is read from, in layering order.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        files.extend(self.profile_path());
        files
    }

    /// Directory that relative paths in the config (plugins, ...) resolve against.
    pub fn base_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).to_path_buf()
    }
}

/// A loaded, fully validated config.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub source: ConfigSource,
    /// Short content hash of the effective config, shown in the admin API.
    pub version: String,
    pub loaded_at: std::time::SystemTime,
    figment: Figment,
}

impl Loaded {
    /// An error about `key`, attributed to the file its value came from;
    /// for checks made after loading (plugins that fail to load).
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: origin_of_key(&self.figment, key, &self.source),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// One problem in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `environment`) the offending value came from.
    pub origin: String,
    /// Key path such as `upstreams.app.backends[1].weight`; empty for file-level errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Every problem found in a config, in file order where known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(origin: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            origin: origin.into(),
            key: String::new(),
            message: message.into(),
        }])
    }
}

/// Reads, merges and validates the config named by `source`.
pub fn load(source: &ConfigSource) -> Result<Loaded, ConfigErrors> {
    let figment = figment_for(source)?;
    let mut config: Config = figment
        .extract()
        .map_err(|e| all_type_errors(&figment, e, source))?;
    let problems = validate::validate(&config);
    if !problems.is_empty() {
        let errors = problems
            .into_iter()
            .map(|p| ConfigError {
                origin: origin_of_key(&figment, &p.key, source),
                key: p.key,
                message: p.message,
            })
            .collect();
        return Err(ConfigErrors(errors));
    }
    if let Some(file) = config.admin.token_file.clone() {
        let path = source.base_dir().join(&file);
        let token = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))
            .and_then(|t| {
                let t = t.trim().to_string();
                if t.is_empty() {
                    Err(format!("\"{}\" is empty", path.display()))
                } else {
                    Ok(t)
                }
            });
        match token {
            Ok(t) => config.admin.token = Some(super::schema::Secret(t)),
            Err(message) => {
                return Err(ConfigErrors(vec![ConfigError {
                    origin: origin_of_key(&figment, "admin.token_file", source),
                    key: "admin.token_file".into(),
                    message,
                }]));
            }
        }
    }
    config.apply_upstream_defaults();
    let version = version_of(&config);
    let loaded_at = std::time::SystemTime::now();
    Ok(Loaded {
        config,
        source: source.clone(),
        version,
        loaded_at,
        figment,
    })
}

fn figment_for(source: &ConfigSource) -> Result<Figment, ConfigErrors> {
    let base = &source.path;
    if let Err(e) = std::fs::metadata(base) {
        return Err(ConfigErrors::one(
            base.display().to_string(),
            format!("cannot read config file: {e}"),
        ));
    }
    let mut figment = Figment::from(Toml::file_exact(base));
    if let Some(profile_path) = source.profile_path() {
        if !profile_path.is_file() {
            let name = source.profile.as_deref().unwrap_or_default();
            return Err(unknown_profile(&source.profiles_dir(), name, &profile_path));
        }
        figment = figment.merge(Toml::file_exact(profile_path));
    }
    // Only nested keys (`SWITCHYARD_LISTEN__ADDRESS`) are config overrides, so
    // unrelated variables that share the prefix are never mistaken for keys.
    let env = Env::prefixed(ENV_PREFIX)
        .filter(|k: &UncasedStr| k.as_str().contains("__"))
        .split("__");
    Ok(figment.merge(env))
}

fn unknown_profile(dir: &Path, name: &str, path: &Path) -> ConfigErrors {
    let available = available_profiles(dir);
    let available = if available.is_empty() {
        format!("no profiles in {}", dir.display())
    } else {
        format!("available: {}", available.join(", "))
    };
    ConfigErrors::one(
        path.display().to_string(),
        format!("unknown profile \"{name}\" ({available})"),
    )
}

/// The `[bench]` section of profile `name` in `dir` (empty when the profile
/// has none), validated; errors name the file and key path.
pub fn load_bench_profile(dir: &Path, name: &str) -> Result<BenchSection, ConfigErrors> {
    let path = dir.join(format!("{name}.toml"));
    if !path.is_file() {
        return Err(unknown_profile(dir, name, &path));
    }
    let source = ConfigSource::new(path.clone(), None);
    let figment = Figment::from(Toml::file_exact(&path));
    if figment.find_value("bench").is_err() {
        return Ok(BenchSection::default());
    }
    let bench: BenchSection = figment.extract_inner("bench").map_err(|e| {
        let mut errors = from_figment(e, &source);
        for err in &mut errors.0 {
            if !err.key.starts_with("bench") {
                err.key = if err.key.is_empty() {
                    "bench".to_string()
                } else {
                    format!("bench.{}", err.key)
                };
            }
        }
        errors
    })?;
    let problems = validate::validate_bench(&bench);
    if problems.is_empty() {
        return Ok(bench);
    }
    let origin = path.display().to_string();
    Err(ConfigErrors(
        problems
            .into_iter()
            .map(|p| ConfigError {
                origin: origin.clone(),
                key: p.key,
                message: p.message,
            })
            .collect(),
    ))
}

/// Profile names found next to the base config, sorted.
pub fn available_profiles(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    names
}

fn origin_name(meta: Option<&figment::Metadata>, source: &ConfigSource) -> String {
    match meta.and_then(|m| m.source.as_ref()) {
        Some(Source::File(path)) => path.display().to_string(),
        Some(Source::Custom(name)) => name.clone(),
        Some(Source::Code(_)) | None => match meta {
            Some(m) if m.name.contains("environment") => format!("environment ({ENV_PREFIX}*)"),
            _ => source.path.display().to_string(),
        },
        Some(_) => source.path.display().to_string(),
    }
}

/// The file a key's value came from: the deepest key figment knows about.
fn origin_of_key(figment: &Figment, key: &str, source: &ConfigSource) -> String {
    let mut dotted = key.split('[').next().unwrap_or_default().to_string();
    loop {
        if let Some(meta) = figment.find_metadata(&dotted) {
            return origin_name(Some(meta), source);
        }
        match dotted.rfind('.') {
            Some(i) => dotted.truncate(i),
            None => return source.path.display().to_string(),
        }
    }
}

fn from_figment(error: figment::Error, source: &ConfigSource) -> ConfigErrors {
    use figment::error::Kind;
    let errors = error
        .into_iter()
        .map(|e| {
            let mut key = key_path(&e.path);
            let message = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    if e.path.last() != Some(field) {
                        push_key(&mut key, field);
                    }
                    if expected.is_empty() {
                        "unknown key".to_string()
                    } else {
                        format!("unknown key (expected one of: {})", expected.join(", "))
                    }
                }
                Kind::MissingField(field) => {
                    if e.path.last().map(String::as_str) != Some(field.as_ref()) {
                        push_key(&mut key, field);
                    }
                    "missing required key".to_string()
                }
                Kind::UnknownVariant(v, expected) => {
                    format!(
                        "unknown value \"{v}\" (expected one of: {})",
                        expected.join(", ")
                    )
                }
                Kind::InvalidType(actual, expected) => {
                    format!("expected {expected}, found {actual}")
                }
                other => other.to_string(),
            };
            ConfigError {
                origin: origin_name(e.metadata.as_ref(), source),
                key,
                message,
            }
        })
        .collect();
    ConfigErrors(errors)
}

/// Every type error of a config that does not deserialize, not only the
/// first: serde stops at the first error, so after the whole config failed,
/// each table and each entry of `routes`, `upstreams` and `plugins` is tried
/// on its own. (Within one table or entry, only its first error is found.)
fn all_type_errors(
    figment: &Figment,
    first: figment::Error,
    source: &ConfigSource,
) -> ConfigErrors {
    use super::schema::*;
    use figment::value::Value;
    let mut errors = from_figment(first, source).0;
    let mut add = |found: Vec<ConfigError>| {
        for e in found {
            if !errors
                .iter()
                .any(|known| known.key == e.key && known.message == e.message)
            {
                errors.push(e);
            }
        }
    };
    /// An entry deserialized alone; its errors' keys start with `prefix`.
    fn entry<T: serde::de::DeserializeOwned>(
        value: &Value,
        prefix: &str,
        figment: &Figment,
        source: &ConfigSource,
    ) -> Vec<ConfigError> {
        let Err(e) = T::deserialize(value) else {
            return Vec::new();
        };
        let mut found = from_figment(e, source).0;
        for err in &mut found {
            err.key = match err.key.as_str() {
                "" => prefix.to_string(),
                k if k.starts_with('[') => format!("{prefix}{k}"),
                k => format!("{prefix}.{k}"),
            };
            err.origin = origin_of_key(figment, &err.key, source);
        }
        found
    }
    let Ok(Value::Dict(_, top)) = figment.find_value("") else {
        return ConfigErrors(errors);
    };
    for (key, value) in &top {
        match (key.as_str(), value) {
            ("routes", Value::Array(_, items)) => {
                for (i, v) in items.iter().enumerate() {
                    add(entry::<RouteSection>(
                        v,
                        &format!("routes[{i}]"),
                        figment,
                        source,
                    ));
                }
            }
            ("plugins", Value::Array(_, items)) => {
                for (i, v) in items.iter().enumerate() {
                    add(entry::<PluginSection>(
                        v,
                        &format!("plugins[{i}]"),
                        figment,
                        source,
                    ));
                }
            }
            ("upstreams", Value::Dict(_, ups)) => {
                for (name, v) in ups {
                    add(entry::<UpstreamSection>(
                        v,
                        &format!("upstreams.{name}"),
                        figment,
                        source,
                    ));
                }
            }
            ("runtime", v) => add(entry::<RuntimeSection>(v, key, figment, source)),
            ("log", v) => add(entry::<LogSection>(v, key, figment, source)),
            ("listen", v) => add(entry::<ListenSection>(v, key, figment, source)),
            ("admin", v) => add(entry::<AdminSection>(v, key, figment, source)),
            ("timeouts", v) => add(entry::<TimeoutsSection>(v, key, figment, source)),
            ("limits", v) => add(entry::<LimitsSection>(v, key, figment, source)),
            ("upstream_defaults", v) => add(entry::<UpstreamDefaults>(v, key, figment, source)),
            ("plugin_runtime", v) => add(entry::<PluginRuntimeSection>(v, key, figment, source)),
            ("telemetry", v) => add(entry::<TelemetrySection>(v, key, figment, source)),
            ("admission", v) => add(entry::<AdmissionSection>(v, key, figment, source)),
            ("cache", v) => add(entry::<CacheSection>(v, key, figment, source)),
            ("alerts", v) => add(entry::<AlertsSection>(v, key, figment, source)),
            ("optimizer", v) => add(entry::<OptimizerSection>(v, key, figment, source)),
            ("bench", v) => add(entry::<BenchSection>(v, key, figment, source)),
            _ => {}
        }
    }
    ConfigErrors(errors)
}

fn push_key(key: &mut String, field: &str) {
    if !key.is_empty() {
        key.push('.');
    }
    key.push_str(field);
}

/// `["upstreams", "app", "backends", "1", "weight"]` → `upstreams.app.backends[1].weight`.
fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            push_key(&mut out, seg);
        }
    }
    out
}

fn version_of(config: &Config) -> String {
    let json = serde_json::to_vec(config).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_render_indices() {
        let p: Vec<String> = ["upstreams", "app", "backends", "1", "weight"]
            .map(String::from)
            .to_vec();
        assert_eq!(key_path(&p), "upstreams.app.backends[1].weight");
    }
}
