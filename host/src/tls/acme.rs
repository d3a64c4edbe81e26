//! Certificates from an ACME CA (RFC 8555), obtained and renewed in the
//! background with the HTTP-01 challenge.
//!
//! - The account's credentials and the certificate with its key are kept in
//!   `acme.storage`, so a restart serves the stored certificate at once and
//!   neither re-registers nor re-orders.
//! - Every `check_interval` (and at start) the served certificate is looked
//!   at; one missing, for other names, or with less than `renew_before` left
//!   is ordered anew. The new one replaces the old in the certificate store
//!   with one atomic store: handshakes in progress finish on the old one,
//!   established connections are untouched.
//! - The CA's HTTP-01 requests (`GET /.well-known/acme-challenge/TOKEN` on
//!   port 80 of each name) are answered by the plain listener from
//!   [`Challenges`], before routing.
//! - A failed order is logged, counted in
//!   `switchyard_acme_orders_total{result="failure"}` and retried with
//!   backoff; the certificate served until then stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use super::certs::{CertStore, Certificate, from_pem};
use crate::config::AcmeSection;

/// The path prefix of HTTP-01 challenge requests.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Pending HTTP-01 challenges: token → key authorization.
#[derive(Debug, Default)]
pub struct Challenges(Mutex<HashMap<String, String>>);

impl Challenges {
    /// The answer to `GET /.well-known/acme-challenge/TOKEN`, if `path` is
    /// such a request for a pending token.
    #[inline]
    pub fn answer(&self, path: &str) -> Option<String> {
        // Every request asks: one byte compare rejects nearly all.
        if path.as_bytes().get(1) != Some(&b'.') {
            return None;
        }
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        self.lock().get(token).cloned()
    }

    fn add(&self, token: &str, key_authorization: &str) {
        self.lock()
            .insert(token.to_string(), key_authorization.to_string());
    }

    fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long an order may take, from the challenges to the certificate.
const ORDER_PATIENCE: Duration = Duration::from_secs(120);
/// The first wait after a failed order; doubled per failure up to
/// `check_interval`.
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The background task of one `[acme]` section; dropping it stops it.
pub struct AcmeTask(tokio::task::JoinHandle<()>);

impl Drop for AcmeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where `section` keeps its files: relative to `base_dir`.
pub fn storage_dir(section: &AcmeSection, base_dir: &Path) -> PathBuf {
    base_dir.join(&section.storage)
}

/// The files of the certificate for `section`'s names.
fn cert_files(dir: &Path, section: &AcmeSection) -> (PathBuf, PathBuf) {
    let stem = section
        .names
        .first()
        .map_or("certificate", String::as_str)
        .replace('*', "_wildcard");
    (
        dir.join(format!("{stem}.crt.pem")),
        dir.join(format!("{stem}.key.pem")),
    )
}

/// The certificate stored for `section`, if any (whatever its validity).
pub fn load_stored(section: &AcmeSection, base_dir: &Path) -> Option<Certificate> {
    let dir = storage_dir(section, base_dir);
    let (cert, key) = cert_files(&dir, section);
    if !cert.exists() {
        return None;
    }
    match super::certs::load_files(&cert, &key) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("ACME: the stored certificate cannot be used ({e}); ordering a new one");
            None
        }
    }
}

/// Starts obtaining and renewing the certificate of `section` into
/// `store`, answering challenges through `challenges`.
pub fn start(
    section: AcmeSection,
    base_dir: PathBuf,
    store: Arc<CertStore>,
    challenges: Arc<Challenges>,
) -> AcmeTask {
    AcmeTask(tokio::spawn(async move {
        let manager = Manager {
            dir: storage_dir(&section, &base_dir),
            ca_bundle: section.ca_bundle.as_ref().map(|p| base_dir.join(p)),
            section,
            store,
            challenges,
        };
        manager.run().await;
    }))
}

struct Manager {
    section: AcmeSection,
    dir: PathBuf,
    ca_bundle: Option<PathBuf>,
    store: Arc<CertStore>,
    challenges: Arc<Challenges>,
}

impl Manager {
    async fn run(self) {
        let check = self
            .section
            .check_interval
            .get()
            .max(Duration::from_secs(1));
        let mut account: Option<Account> = None;
        let mut backoff = FIRST_RETRY;
        loop {
            let wait = match self.needed() {
                None => check,
                Some(why) => {
                    tracing::info!(
                        "ACME: ordering a certificate for {:?}: {why}",
                        self.section.names
                    );
                    match self.renew(&mut account).await {
                        Ok(cert) => {
                            tracing::info!(
                                "ACME: certificate for {:?} obtained, valid until {}",
                                cert.names,
                                humantime::format_rfc3339_seconds(cert.not_after)
                            );
                            metrics::counter!("switchyard_acme_orders_total", "result" => "success")
                                .increment(1);
                            self.store.set_acme(Some(cert));
                            backoff = FIRST_RETRY;
                            check
                        }
                        Err(e) => {
                            metrics::counter!("switchyard_acme_orders_total", "result" => "failure")
                                .increment(1);
                            let wait = backoff.min(check);
                            tracing::error!(
                                "ACME: ordering a certificate for {:?} failed: {e:#}; retrying in {}",
                                self.section.names,
                                humantime::format_duration(wait)
                            );
                            backoff = (backoff * 2).min(check);
                            wait
                        }
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Why a new certificate is needed now, if it is.
    fn needed(&self) -> Option<&'static str> {
        let Some(current) = self.store.acme() else {
            return Some("none yet");
        };
        let mut wanted: Vec<String> = self
            .section
            .names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        wanted.sort();
        let mut have = current.names.clone();
        have.sort();
        if wanted != have {
            return Some("the names changed");
        }
        if current.remaining() < self.section.renew_before.get() {
            return Some("the current one expires within renew_before");
        }
        None
    }

    /// The account: restored from storage, or registered (and stored).
    async fn account(&self) -> anyhow::Result<Account> {
        use anyhow::Context as _;
        let builder = || match &self.ca_bundle {
            Some(ca) => Account::builder_with_root(ca)
                .with_context(|| format!("cannot use acme.ca_bundle {}", ca.display())),
            None => Account::builder().context("cannot make an HTTPS client"),
        };
        let file = self.dir.join(format!(
            "account-{:016x}.json",
            super::fingerprint(self.section.directory.as_bytes())
        ));
        if let Ok(text) = std::fs::read(&file) {
            match serde_json::from_slice::<AccountCredentials>(&text) {
                Ok(credentials) => {
                    return builder()?
                        .from_credentials(credentials)
                        .await
                        .context("cannot restore the stored ACME account");
                }
                Err(e) => tracing::warn!(
                    "ACME: {} is not usable ({e}); registering a new account",
                    file.display()
                ),
            }
        }
        let contact: Vec<&str> = self.section.contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.section.directory.clone(),
                None,
            )
            .await
            .with_context(|| format!("cannot register with {}", self.section.directory))?;
        let text = serde_json::to_vec_pretty(&credentials)?;
        write_private(&file, &text)?;
        tracing::info!("ACME: registered an account at {}", self.section.directory);
        Ok(account)
    }

    /// One order, from the challenges to a certificate stored and parsed.
    async fn renew(&self, account: &mut Option<Account>) -> anyhow::Result<Certificate> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create acme.storage {}", self.dir.display()))?;
        let acct = match account {
            Some(a) => a.clone(),
            None => {
                let a = self.account().await?;
                *account = Some(a.clone());
                a
            }
        };
        let identifiers: Vec<Identifier> = self
            .section
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut order = acct
            .new_order(&NewOrder::new(&identifiers))
            .await
            .context("the CA refused the order")?;
        let mut tokens = Vec::new();
        let answered = self.answer_challenges(&mut order, &mut tokens).await;
        let result = async {
            answered?;
            let policy = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .timeout(ORDER_PATIENCE);
            let status = order
                .poll_ready(&policy)
                .await
                .context("the challenges were not validated")?;
            if status != OrderStatus::Ready {
                anyhow::bail!("the order became {status:?}");
            }
            let key_pem = order
                .finalize()
                .await
                .context("finalizing the order failed")?;
            let chain_pem = order
                .poll_certificate(&policy)
                .await
                .context("the certificate was not issued")?;
            Ok((chain_pem, key_pem))
        }
        .await;
        for token in &tokens {
            self.challenges.remove(token);
        }
        let (chain_pem, key_pem) = result?;
        let (cert_file, key_file) = cert_files(&self.dir, &self.section);
        let cert = from_pem(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            &cert_file.display().to_string(),
        )
        .map_err(|e| anyhow::anyhow!("the issued certificate is not usable: {e}"))?;
        write_private(&key_file, key_pem.as_bytes())?;
        write_private(&cert_file, chain_pem.as_bytes())?;
        Ok(cert)
    }

    /// Publishes the HTTP-01 answer of every pending authorization and tells
    /// the CA to check it; the tokens published are pushed to `tokens`.
    async fn answer_challenges(
        &self,
        order: &mut instant_acme::Order,
        tokens: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => anyhow::bail!("an authorization is {other:?}"),
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| anyhow::anyhow!("the CA offers no HTTP-01 challenge"))?;
            self.challenges
                .add(&challenge.token, challenge.key_authorization().as_str());
            tokens.push(challenge.token.clone());
            challenge.set_ready().await?;
        }
        Ok(())
    }
}

/// Writes a file readable by its owner only (it holds a private key),
/// replacing it atomically.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_tokens_under_the_prefix_are_answered() {
        let c = Challenges::default();
        c.add("tok1", "tok1.thumb");
        assert_eq!(
            c.answer("/.well-known/acme-challenge/tok1").as_deref(),
            Some("tok1.thumb")
        );
        assert_eq!(c.answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(c.answer("/tok1"), None);
        c.remove("tok1");
        assert_eq!(c.answer("/.well-known/acme-challenge/tok1"), None);
    }
}
