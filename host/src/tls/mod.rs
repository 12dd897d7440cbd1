//! TLS termination for `--secure=true`: one rustls server configuration offering HTTP/2 and HTTP/1.1
//! (ALPN), whose certificate comes either from your own PEM files (`own_cert`, re-read when they
//! change) or from an ACME server (`acme`, TLS-ALPN-01 on the same port, renewed in the background).

mod acme;
mod acme_cache;
mod describe;
mod own_cert;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{Acceptor, ResolvesServerCert};
use tokio_rustls::rustls::{ServerConfig, crypto::aws_lc_rs};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A client gets this long to finish its handshake, so half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Turns accepted TCP connections into TLS streams.
pub struct TlsTerminator {
    api: Arc<ServerConfig>,
    /// ACME only: the configuration that answers TLS-ALPN-01 validation handshakes.
    challenge: Option<Arc<ServerConfig>>,
}

impl TlsTerminator {
    /// Loads (own certificate) or starts obtaining (ACME) the certificate. Own-certificate problems
    /// stop start-up here, naming the file.
    pub fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let provider = provider();
        let (resolver, challenge): (Arc<dyn ResolvesServerCert>, _) = if config.auto_cert {
            let acme = acme::start(config, provider.clone(), shutdown)?;
            (acme.resolver, Some(acme.challenge))
        } else {
            let (certificate, reloader) =
                own_cert::OwnCertificate::load(&config.key_path, &config.cert_path, provider.clone())?;
            tokio::spawn(own_cert::watch(reloader, shutdown));
            (certificate, None)
        };
        let mut api = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        // Browsers multiplex their SSE streams over one HTTP/2 connection; prefer it.
        api.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            api: Arc::new(api),
            challenge,
        })
    }

    /// The TLS stream to serve HTTP on, or `None` when the connection was an ACME validation
    /// handshake (answered and closed here).
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
        let handshake = async {
            let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
            if let Some(challenge) = &self.challenge
                && rustls_acme::is_tls_alpn_challenge(&start.client_hello())
            {
                tracing::info!("answering an ACME TLS-ALPN-01 validation");
                let mut validation = start.into_stream(challenge.clone()).await?;
                validation.shutdown().await?;
                return Ok(None);
            }
            start.into_stream(self.api.clone()).await.map(Some)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")))
    }
}

/// The one crypto provider Broker uses (aws-lc-rs, as jsonwebtoken), named explicitly so that no
/// process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}
