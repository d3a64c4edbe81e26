//! TLS at the edge and towards backends, with rustls.
//!
//! - `certs`: certificates from PEM, and the store the HTTPS listener picks
//!   from by SNI (replaced whole on a file change or an ACME renewal).
//! - this file: the server side — the rustls config of the HTTPS listener
//!   (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, session tickets), the
//!   handshake with its deadline, and handshake failures counted by reason.
//! - `client`: the client side, per upstream — roots, SNI, client
//!   certificates (mTLS), and the explicit opt-out of verification.
//! - `acme`: certificates from an ACME CA with the HTTP-01 challenge.
//! - [`Materials`]: what a config's TLS parts read from disk (certificates,
//!   CA bundles, client keys), read and checked before the config is
//!   applied, so a bad file is a config error and the running config stays.
//!
//! The crypto provider is *ring*: it builds with a C compiler alone (no
//! CMake, no Go, unlike aws-lc-rs), which keeps Switchyard buildable on a
//! machine that has only Rust and a C toolchain; its AES-GCM and ChaCha20
//! are the same assembly BoringSSL uses. aws-lc-rs is faster at some
//! handshakes (RSA signatures, post-quantum key exchange), which this
//! choice gives up; the benchmark figures in the README are with ring.

pub mod acme;
pub mod certs;
pub mod client;

pub use acme::Challenges;

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub use certs::{CertStore, Certificate};

use crate::config::{ConfigErrors, Loaded, TlsSection, TlsVersion};

/// A short content hash, to tell whether files changed.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// TLS settings of one upstream, ready to connect with.
#[derive(Clone)]
pub struct BackendTls {
    /// By backend address: the upstream's rustls config and the name each
    /// backend's certificate is checked against.
    pub targets: std::collections::HashMap<String, crate::http1::client::TlsTarget>,
    /// Of the settings and the files they name: pools are keyed by it, so
    /// changed roots or a new client certificate start new connections.
    pub fingerprint: u64,
}

impl BackendTls {
    /// The pool key of backend `addr` spoken to with these settings.
    pub fn pool_key(&self, addr: &str) -> String {
        format!("{addr} tls {:016x}", self.fingerprint)
    }
}

/// What the TLS parts of a config read from disk, read and checked before
/// the config is applied: a certificate that does not parse, a key that
/// does not fit, a CA bundle with no certificate is a config error naming
/// the key, and the running config (with its certificates) stays.
#[derive(Default)]
pub struct Materials {
    /// `tls.certificates`, in order.
    pub certs: Vec<Certificate>,
    /// Upstreams with `tls`, by name.
    pub upstreams: std::collections::HashMap<String, BackendTls>,
    /// Every file read, to be watched.
    pub files: Vec<std::path::PathBuf>,
    /// Of every file read: tells a reload whether certificates changed
    /// while the config did not.
    pub fingerprint: u64,
    /// Said when these are applied (at start and at every reload).
    pub warnings: Vec<String>,
}

impl Materials {
    pub fn load(loaded: &Loaded) -> Result<Materials, ConfigErrors> {
        let config = &loaded.config;
        let base = loaded.source.base_dir();
        let mut errors = Vec::new();
        let mut m = Materials::default();
        let mut seen = Vec::new();
        let mut read = |path: &std::path::Path, m: &mut Materials| {
            let path = base.join(path);
            let bytes = std::fs::read(&path);
            if let Ok(b) = &bytes {
                seen.extend_from_slice(path.as_os_str().as_encoded_bytes());
                seen.extend_from_slice(b);
            }
            m.files.push(path.clone());
            bytes.map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        if let Some(tls) = &config.tls {
            for (i, c) in tls.certificates.iter().enumerate() {
                let key = format!("tls.certificates[{i}]");
                let cert = read(&c.cert, &mut m);
                let pkey = read(&c.key, &mut m);
                let made = match (cert, pkey) {
                    (Err(e), _) => Err((format!("{key}.cert"), e)),
                    (_, Err(e)) => Err((format!("{key}.key"), e)),
                    (Ok(cert), Ok(pkey)) => {
                        let source = base.join(&c.cert).display().to_string();
                        certs::from_pem(&cert, &pkey, &source).map_err(|e| (key.clone(), e))
                    }
                };
                match made {
                    Ok(c) => m.certs.push(c),
                    Err((key, e)) => errors.push(loaded.error_at(&key, e)),
                }
            }
        }
        for (name, up) in &config.upstreams {
            let Some(tls) = &up.tls else { continue };
            let key = format!("upstreams.{name}.tls");
            if tls.insecure_skip_verify {
                m.warnings.push(format!(
                    "{key}.insecure_skip_verify = true: the certificates of upstream \"{name}\" are NOT verified; anyone on the path can impersonate its backends"
                ));
            }
            // The protocol too: its ALPN is part of the connections made.
            let mut fp = format!("{tls:?} {:?}", up.protocol).into_bytes();
            for path in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
                if let Ok(b) = read(path, &mut m) {
                    fp.extend_from_slice(&b);
                }
            }
            let h2 = up.protocol == crate::config::Protocol::H2;
            match client::client_config(tls, &base, h2) {
                Ok(cfg) => {
                    let mut targets = std::collections::HashMap::new();
                    for (i, b) in up.backends.iter().enumerate() {
                        let host = b.address.authority();
                        match client::server_name(tls.sni.as_deref(), host.host()) {
                            Ok(n) => {
                                let target = crate::http1::client::TlsTarget::new(cfg.clone(), n);
                                targets.insert(b.address.as_str().to_string(), target);
                            }
                            Err(e) => errors.push(loaded.error_at(
                                &format!("upstreams.{name}.backends[{i}].address"),
                                format!("{e}; give upstreams.{name}.tls.sni"),
                            )),
                        }
                    }
                    m.upstreams.insert(
                        name.clone(),
                        BackendTls {
                            targets,
                            fingerprint: fingerprint(&fp),
                        },
                    );
                }
                Err((field, e)) => {
                    let key = if field.is_empty() {
                        key
                    } else {
                        format!("{key}.{field}")
                    };
                    errors.push(loaded.error_at(&key, e));
                }
            }
        }
        m.fingerprint = fingerprint(&seen);
        if errors.is_empty() {
            Ok(m)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// The crypto provider every TLS config of the process uses.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// ALPN protocol ids, in the server's order of preference.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The rustls config of the HTTPS listener; certificates come from `store`
/// at each handshake.
pub fn server_config(
    section: &TlsSection,
    store: Arc<CertStore>,
) -> Result<Arc<ServerConfig>, String> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match section.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(versions)
        .map_err(|e| format!("cannot make a TLS config: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certs::Resolver(store)));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    if section.session_tickets {
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot make a session ticketer: {e}"))?;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    } else {
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Ok(Arc::new(config))
}

/// What a completed handshake agreed on.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// ALPN chose `h2`.
    pub h2: bool,
}

/// Runs the server handshake on `tcp` within `limit`. A failure is counted
/// in `switchyard_tls_handshake_failures_total{reason}` and logged at debug
/// level (clients fail handshakes all the time; that is not the proxy's
/// fault).
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    limit: Duration,
) -> Option<Accepted> {
    let peer = tcp.peer_addr().ok();
    let reason = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let conn = stream.get_ref().1;
            let h2 = conn.alpn_protocol() == Some(ALPN_H2);
            let version = match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
                _ => "other",
            };
            metrics::counter!(
                "switchyard_tls_handshakes_total",
                "version" => version,
                "resumed" => if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) { "yes" } else { "no" }
            )
            .increment(1);
            return Some(Accepted { stream, h2 });
        }
        Ok(Err(e)) => failure_reason(&e),
        Err(_) => "timeout",
    };
    metrics::counter!("switchyard_tls_handshake_failures_total", "reason" => reason).increment(1);
    tracing::debug!(peer = ?peer, "TLS handshake failed: {reason}");
    None
}

/// A low-cardinality name for why a handshake failed.
fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription, Error};
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return "closed";
    }
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return "io";
    };
    match tls {
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => "not_tls",
        Error::PeerIncompatible(p) => match p {
            rustls::PeerIncompatible::NoCipherSuitesInCommon => "no_shared_cipher",
            rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls13RequiredForQuic
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired => "protocol_version",
            _ => "incompatible",
        },
        Error::AlertReceived(AlertDescription::BadCertificate)
        | Error::AlertReceived(AlertDescription::UnknownCA)
        | Error::AlertReceived(AlertDescription::CertificateUnknown)
        | Error::AlertReceived(AlertDescription::CertificateExpired) => {
            "client_rejected_certificate"
        }
        Error::AlertReceived(AlertDescription::ProtocolVersion) => "protocol_version",
        Error::AlertReceived(_) => "alert",
        Error::NoCertificatesPresented | Error::General(_) => "no_certificate",
        _ => "other",
    }
}
