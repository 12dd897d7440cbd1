//! Your own certificate (`--auto_cert=false`): a PEM private key and a PEM chain, checked at start
//! and re-read when either file changes, so a renewed certificate reaches new connections without a
//! restart (connections already open keep the one they shook hands with). A changed pair that does
//! not load (say, the key written before the certificate) is refused with a logged reason and the
//! previous certificate stays; it is tried again when the files change again. The files are polled
//! rather than watched with inotify, which misses renames into place on some filesystems.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::describe;

const POLL: Duration = Duration::from_secs(1);

/// The certificate being served, swapped in place on reload: what every handshake asks.
#[derive(Debug)]
pub struct OwnCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

/// What the watcher remembers between polls; owned by `watch` alone.
pub struct Reloader {
    key_path: PathBuf,
    cert_path: PathBuf,
    certificate: Arc<OwnCertificate>,
    provider: Arc<CryptoProvider>,
    /// Fingerprint of the file contents last tried, loaded or not.
    tried: [u8; 32],
    /// The last failure to read the files, so it is logged once rather than every poll.
    unreadable: Option<String>,
}

impl OwnCertificate {
    /// Reads and checks the pair; any problem is an error naming the file. Returns the certificate
    /// and the reloader to hand to `watch`.
    pub fn load(
        key_path: &Path,
        cert_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<(Arc<Self>, Reloader)> {
        let (key_pem, cert_pem) = read_pair(key_path, cert_path)?;
        let certified = parse_pair(key_path, &key_pem, cert_path, &cert_pem, &provider)?;
        log_serving(cert_path, &certified, "serving");
        let certificate = Arc::new(Self {
            current: RwLock::new(Arc::new(certified)),
        });
        let reloader = Reloader {
            key_path: key_path.to_owned(),
            cert_path: cert_path.to_owned(),
            certificate: certificate.clone(),
            provider,
            tried: fingerprint(&key_pem, &cert_pem),
            unreadable: None,
        };
        Ok((certificate, reloader))
    }
}

impl ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().clone())
    }
}

impl Reloader {
    /// Re-reads the files; swaps the certificate in when they changed and load.
    fn reload_if_changed(&mut self) {
        let (key_pem, cert_pem) = match read_pair(&self.key_path, &self.cert_path) {
            Ok(pair) => {
                self.unreadable = None;
                pair
            }
            Err(error) => {
                let error = format!("{error:#}");
                if self.unreadable.as_ref() != Some(&error) {
                    tracing::warn!("{error}; still serving the previous certificate");
                    self.unreadable = Some(error);
                }
                return;
            }
        };
        let seen = fingerprint(&key_pem, &cert_pem);
        if self.tried == seen {
            return;
        }
        self.tried = seen;
        match parse_pair(
            &self.key_path,
            &key_pem,
            &self.cert_path,
            &cert_pem,
            &self.provider,
        ) {
            Ok(certified) => {
                log_serving(&self.cert_path, &certified, "reloaded; now serving");
                *self.certificate.current.write().unwrap() = Arc::new(certified);
            }
            Err(error) => tracing::warn!(
                "certificate files changed but do not load, still serving the previous certificate: {error:#}"
            ),
        }
    }
}

/// Polls the files until `shutdown`.
pub async fn watch(mut reloader: Reloader, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        // File reads and key parsing are blocking work.
        let polled = tokio::task::spawn_blocking(move || {
            reloader.reload_if_changed();
            reloader
        });
        match polled.await {
            Ok(polled) => reloader = polled,
            Err(_) => return,
        }
    }
}

fn read_pair(key_path: &Path, cert_path: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let key = std::fs::read(key_path)
        .with_context(|| format!("cannot read the private key {}", key_path.display()))?;
    let cert = std::fs::read(cert_path)
        .with_context(|| format!("cannot read the certificate chain {}", cert_path.display()))?;
    Ok((key, cert))
}

fn parse_pair(
    key_path: &Path,
    key_pem: &[u8],
    cert_path: &Path,
    cert_pem: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert_path.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate (empty chain)", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .with_context(|| format!("{} holds no PEM private key", key_path.display()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
        tokio_rustls::rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "the private key {} does not match the certificate {}",
            key_path.display(),
            cert_path.display()
        ),
        other => anyhow::anyhow!(
            "cannot use the private key {} with the certificate {}: {other}",
            key_path.display(),
            cert_path.display()
        ),
    })
}

fn fingerprint(key_pem: &[u8], cert_pem: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(Sha256::digest(key_pem));
    hash.update(Sha256::digest(cert_pem));
    hash.finalize().into()
}

fn log_serving(cert_path: &Path, certified: &CertifiedKey, what: &str) {
    let Some(summary) = certified.cert.first().and_then(|der| describe::summarize(der)) else {
        tracing::info!("TLS: {what} the certificate from {}", cert_path.display());
        return;
    };
    tracing::info!(
        "TLS: {what} the certificate from {} for {}, valid until {}",
        cert_path.display(),
        summary.names,
        summary.not_after
    );
    if summary.expired {
        tracing::warn!(
            "TLS: the certificate in {} is outside its validity period: clients will refuse it",
            cert_path.display()
        );
    }
}
