//! Certificates: loading a chain and its key from PEM, the names and expiry
//! a certificate carries, and the store the HTTPS listener picks from by
//! SNI.
//!
//! The store has two sources — the certificate files of `[tls]` and the
//! certificate ACME obtained — each replaced whole with one atomic store, so
//! a file reload or a renewal never disturbs a handshake in progress and
//! never touches an established connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::provider;

/// A certificate chain with its key, and what it is for.
#[derive(Debug)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the leaf's subjectAltName (or its common name),
    /// lower-case; `*.example.com` for wildcards.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    /// Where it came from, for logs and errors.
    pub source: String,
}

impl Certificate {
    /// How long until it expires (zero once it has).
    pub fn remaining(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }

    fn matches(&self, name: &str) -> Match {
        let mut best = Match::None;
        for n in &self.names {
            if n == name {
                return Match::Exact;
            }
            if let Some(suffix) = n.strip_prefix('*')
                && name.len() > suffix.len()
                && name.ends_with(suffix)
                && !name[..name.len() - suffix.len()].contains('.')
            {
                best = Match::Wildcard;
            }
        }
        best
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    None,
    Wildcard,
    Exact,
}

/// Loads a chain and its key from PEM files.
pub fn load_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Certificate, String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    from_pem(&cert_pem, &key_pem, &cert.display().to_string())
}

/// A chain and its key from PEM text.
pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], source: &str) -> Result<Certificate, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{source}: not a PEM certificate chain: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{source}: no certificate in it"));
    };
    let (names, not_after) = describe(leaf).map_err(|e| format!("{source}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("{source}: its key is not a PEM private key: {e}"))?;
    let key = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("{source}: the key does not fit the certificate: {e}"))?;
    Ok(Certificate {
        key: Arc::new(key),
        names,
        not_after,
        source: source.to_string(),
    })
}

/// The names a leaf certificate is for, and when it expires.
pub fn describe(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => Some(
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string(),
                        ),
                        16 => Some(
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?).to_string(),
                        ),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty()
        && let Some(cn) = cert.subject().iter_common_name().next()
        && let Ok(cn) = cn.as_str()
    {
        names.push(cn.to_ascii_lowercase());
    }
    let secs = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    Ok((names, not_after))
}

/// What the HTTPS listener serves from.
#[derive(Debug)]
pub struct CertStore {
    files: ArcSwap<Vec<Arc<Certificate>>>,
    acme: ArcSwap<Option<Arc<Certificate>>>,
}

impl Default for CertStore {
    fn default() -> Self {
        CertStore {
            files: ArcSwap::from_pointee(Vec::new()),
            acme: ArcSwap::from_pointee(None),
        }
    }
}

impl CertStore {
    /// The certificates of `[tls]`, in config order (the first is the
    /// default).
    pub fn set_files(&self, certs: Vec<Certificate>) {
        export_expiry(&certs, "file");
        self.files
            .store(Arc::new(certs.into_iter().map(Arc::new).collect()));
    }

    pub fn set_acme(&self, cert: Option<Certificate>) {
        export_expiry(cert.as_slice(), "acme");
        self.acme.store(Arc::new(cert.map(Arc::new)));
    }

    pub fn acme(&self) -> Option<Arc<Certificate>> {
        self.acme.load().as_ref().clone()
    }

    /// Every certificate served now.
    pub fn all(&self) -> Vec<Arc<Certificate>> {
        let mut all: Vec<Arc<Certificate>> = self.files.load().iter().cloned().collect();
        all.extend(self.acme());
        all
    }

    /// The certificate for a client that sent `sni`: an exact name first,
    /// then a wildcard, then the default (the first of the files, else
    /// ACME's).
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let all = self.all();
        let best = sni.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            all.iter()
                .map(|c| (c.matches(&name), c))
                .filter(|(m, _)| *m != Match::None)
                .max_by_key(|(m, _)| *m)
                .map(|(_, c)| c.key.clone())
        });
        best.or_else(|| all.first().map(|c| c.key.clone()))
    }
}

/// `switchyard_tls_certificate_expiry_timestamp_seconds{source, name}`:
/// when each served certificate expires (Unix time), named by its first
/// name, for an alert well before it happens.
fn export_expiry(certs: &[Certificate], source: &'static str) {
    for c in certs {
        let secs = c
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let name = c.names.first().cloned().unwrap_or_default();
        metrics::gauge!(
            "switchyard_tls_certificate_expiry_timestamp_seconds",
            "source" => source,
            "name" => name
        )
        .set(secs);
    }
}

/// Lets rustls ask the store for each handshake's certificate.
#[derive(Debug)]
pub struct Resolver(pub Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `names`, as (cert PEM, key PEM).
    pub fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn cert(names: &[&str]) -> Certificate {
        let (c, k) = self_signed(names);
        from_pem(c.as_bytes(), k.as_bytes(), "test").expect("certificate")
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_default() {
        let store = CertStore::default();
        let (default, exact, wild) = (
            cert(&["default.example"]),
            cert(&["api.example.com"]),
            cert(&["*.example.com"]),
        );
        let (d, e, w) = (default.key.clone(), exact.key.clone(), wild.key.clone());
        store.set_files(vec![default, wild, exact]);
        let same = |a: &Option<Arc<CertifiedKey>>, b: &Arc<CertifiedKey>| {
            a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
        };
        assert!(same(&store.pick(Some("API.example.com")), &e));
        assert!(same(&store.pick(Some("www.example.com")), &w));
        assert!(
            same(&store.pick(Some("a.b.example.com")), &d),
            "one label only"
        );
        assert!(same(&store.pick(Some("other.org")), &d));
        assert!(same(&store.pick(None), &d));
    }

    #[test]
    fn a_key_that_does_not_fit_is_refused() {
        let (c, _) = self_signed(&["a.example"]);
        let (_, other_key) = self_signed(&["b.example"]);
        let e = from_pem(c.as_bytes(), other_key.as_bytes(), "site.pem").unwrap_err();
        assert!(e.contains("the key does not fit the certificate"), "{e}");
        let e = from_pem(b"garbage", other_key.as_bytes(), "site.pem").unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let c = cert(&["a.example"]);
        assert_eq!(c.names, vec!["a.example"]);
        assert!(c.remaining() > Duration::from_secs(3600));
    }
}
