//! Automatic certificates (`--auto_cert=true`) through rustls-acme: the certificate for `--domain` is
//! ordered with the TLS-ALPN-01 challenge (answered on the HTTPS port itself), cached with the ACME
//! account under `--certs`, and renewed in the background once a third of its lifetime is left.
//! Failed orders are logged with their reason and retried by rustls-acme with exponential backoff;
//! until a certificate exists, HTTPS handshakes fail and everything else keeps running.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls_acme::{AcmeConfig, EventOk};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::server::ResolvesServerCert;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::acme_cache::AcmeCache;
use crate::config::Config;

pub struct Acme {
    /// Serves the current certificate (and the challenge certificate during validation).
    pub resolver: Arc<dyn ResolvesServerCert>,
    /// For handshakes that ask for the `acme-tls/1` protocol.
    pub challenge: Arc<ServerConfig>,
}

pub fn start(
    config: &Config,
    provider: Arc<CryptoProvider>,
    shutdown: CancellationToken,
) -> anyhow::Result<Acme> {
    let directory = config.acme_directory_url()?.to_owned();
    if directory.contains("letsencrypt.org") && !is_public_name(&config.domain) {
        tracing::warn!(
            "ACME: Let's Encrypt only issues certificates for public names, not {:?}: set --domain to a name that resolves to this server",
            config.domain
        );
    }
    prepare_cache_dir(&config.certs)?;
    let client = acme_client_config(config.acme_ca.as_deref(), provider.clone())?;
    let mut state = AcmeConfig::new_with_client_config([config.domain.as_str()], client)
        .contact(config.acme_email.iter().map(|email| format!("mailto:{email}")))
        .cache(AcmeCache::new(config.certs.clone()))
        .directory(&directory)
        .state();
    let acme = Acme {
        resolver: state.resolver(),
        challenge: state.challenge_rustls_config_with_provider(provider),
    };
    let domain = config.domain.clone();
    let certs = config.certs.display().to_string();
    tracing::info!("ACME: certificate for {domain} from {directory}, cached in {certs}");
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = state.next() => event,
            };
            match event {
                Some(Ok(EventOk::DeployedCachedCert)) => {
                    tracing::info!("ACME: serving the cached certificate for {domain} from {certs}");
                }
                Some(Ok(EventOk::DeployedNewCert)) => {
                    tracing::info!("ACME: obtained and serving a new certificate for {domain}");
                }
                Some(Ok(EventOk::CertCacheStore)) => tracing::info!("ACME: certificate cached in {certs}"),
                Some(Ok(EventOk::AccountCacheStore)) => tracing::info!("ACME: account key cached in {certs}"),
                // rustls-acme waits (exponential backoff) before the next attempt itself.
                Some(Err(error)) => tracing::warn!("ACME: {error}; will retry"),
                None => return,
            }
        }
    });
    Ok(acme)
}

/// A name a public CA could validate: dotted, not an IP address, not `localhost`.
fn is_public_name(domain: &str) -> bool {
    domain.contains('.')
        && domain.parse::<std::net::IpAddr>().is_err()
        && !domain.eq_ignore_ascii_case("localhost")
        && !domain.to_ascii_lowercase().ends_with(".localhost")
}

/// The cache holds the account key and the certificate's private key: keep it to this user.
fn prepare_cache_dir(certs: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(certs)
        .with_context(|| format!("creating the ACME cache directory {}", certs.display()))?;
    let mode = std::fs::metadata(certs)
        .with_context(|| format!("reading {}", certs.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "ACME: {} is readable by other users (mode {:o}); it will hold private keys",
            certs.display(),
            mode & 0o777
        );
    }
    Ok(())
}

/// How the ACME client checks the ACME server: the web PKI roots, plus `--acme_ca`'s.
fn acme_client_config(
    extra_roots: Option<&Path>,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_roots {
        let pem = std::fs::read(path).with_context(|| format!("cannot read --acme_ca {}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("--acme_ca {} is not a PEM certificate file", path.display()))?;
        if certificates.is_empty() {
            bail!("--acme_ca {} holds no certificate", path.display());
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .with_context(|| format!("--acme_ca {}: unusable root certificate", path.display()))?;
        }
    }
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(client))
}
