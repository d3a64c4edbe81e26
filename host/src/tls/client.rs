//! TLS towards an upstream's backends: which roots their certificates must
//! chain to, the name checked (and sent as SNI), an optional client
//! certificate for backends that require one, and the explicit opt-out of
//! verification.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use super::provider;
use crate::config::UpstreamTls;

/// The client config for one upstream. Errors name the key they are about
/// (`ca`, `cert`, `key`) and say why.
pub fn client_config(
    tls: &UpstreamTls,
    base_dir: &Path,
    h2: bool,
) -> Result<Arc<ClientConfig>, (&'static str, String)> {
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ("", format!("cannot make a TLS config: {e}")))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything))
    } else {
        builder.with_root_certificates(roots(tls.ca.as_deref(), base_dir)?)
    };
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (base_dir.join(cert), base_dir.join(key));
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
                .and_then(|certs| certs.collect())
                .map_err(|e| ("cert", format!("cannot read {}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(("cert", format!("no certificate in {}", cert.display())));
            }
            let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
                (
                    "key",
                    format!("cannot read a private key from {}: {e}", key.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    "key",
                    format!("the key does not fit the client certificate: {e}"),
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(("key", "a client certificate needs its key".into())),
        (None, Some(_)) => return Err(("cert", "a client key needs its certificate".into())),
    };
    // The upstream's protocol, and only it: an `h2` upstream whose backend
    // does not agree fails the connection rather than falling back.
    config.alpn_protocols = vec![
        if h2 {
            super::ALPN_H2
        } else {
            super::ALPN_HTTP11
        }
        .to_vec(),
    ];
    Ok(Arc::new(config))
}

/// The roots of a PEM bundle, or the system's.
fn roots(ca: Option<&Path>, base_dir: &Path) -> Result<RootCertStore, (&'static str, String)> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let path = base_dir.join(path);
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ("ca", format!("cannot read {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err((
                    "ca",
                    format!("no usable CA certificate in {}", path.display()),
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("a system root could not be loaded: {e}");
            }
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err((
                    "ca",
                    "no system CA roots found; give the backends' CA with `ca`".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// The name a backend is checked against: `sni`, or its address's host.
pub fn server_name(sni: Option<&str>, host: &str) -> Result<ServerName<'static>, String> {
    let name = sni.unwrap_or(host.trim_start_matches('[').trim_end_matches(']'));
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("invalid TLS server name \"{name}\": {e}"))
}

/// `insecure_skip_verify`: any certificate is accepted. The handshake's
/// signatures are still checked, so the connection is encrypted to whoever
/// holds the key of the certificate presented — only who that is goes
/// unchecked.
#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
