//! Where the ACME account key and certificate live between restarts: files in `--certs`, named by
//! the SHA-256 of what they belong to (contact and directory; domains and directory), so changing
//! any of those orders afresh instead of reusing a stale file. Each write is atomic (temporary file,
//! fsync, rename) with mode 0600: a crash never leaves half a private key behind, and the keys are
//! readable by Broker's user only. (rustls-acme's own `DirCache` writes in place with the umask's
//! mode.)

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rustls_acme::{AccountCache, CertCache};
use sha2::{Digest, Sha256};

pub struct AcmeCache {
    dir: PathBuf,
}

impl AcmeCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, kind: &str, names: &[String], directory_url: &str) -> PathBuf {
        let mut hash = Sha256::new();
        for part in names.iter().map(String::as_str).chain([directory_url]) {
            // Length-prefixed, so ["ab", "c"] and ["a", "bc"] differ.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let key: String = hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{kind}-{key}"))
    }

    async fn read(path: PathBuf) -> io::Result<Option<Vec<u8>>> {
        blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io::Error::new(
                error.kind(),
                format!("{}: {error}", path.display()),
            )),
        })
        .await
    }

    async fn write(path: PathBuf, bytes: Vec<u8>) -> io::Result<()> {
        blocking(move || {
            write_private_atomically(&path, &bytes)
                .map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", path.display())))
        })
        .await
    }
}

fn write_private_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    // The rename itself is durable only once the directory is synced.
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

#[async_trait]
impl CertCache for AcmeCache {
    type EC = io::Error;

    async fn load_cert(&self, domains: &[String], directory_url: &str) -> io::Result<Option<Vec<u8>>> {
        Self::read(self.path("cert", domains, directory_url)).await
    }

    async fn store_cert(&self, domains: &[String], directory_url: &str, cert: &[u8]) -> io::Result<()> {
        Self::write(self.path("cert", domains, directory_url), cert.to_vec()).await
    }
}

#[async_trait]
impl AccountCache for AcmeCache {
    type EA = io::Error;

    async fn load_account(&self, contact: &[String], directory_url: &str) -> io::Result<Option<Vec<u8>>> {
        Self::read(self.path("account", contact, directory_url)).await
    }

    async fn store_account(&self, contact: &[String], directory_url: &str, account: &[u8]) -> io::Result<()> {
        Self::write(self.path("account", contact, directory_url), account.to_vec()).await
    }
}
