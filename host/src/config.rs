//! Command-line flags (names and defaults as the original `broker` crate), each also readable from an
//! environment variable so that secrets need not sit on a command line.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

/// Everything Broker is told at start-up.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "broker",
    version,
    about = "Real-time BaaS with WebAssembly-pluggable event guests",
    // A later flag overrides an earlier one (handy for wrappers that add their own).
    args_override_self = true
)]
pub struct Config {
    /// Without a command, Broker serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Plain-HTTP port (0 picks a free one; the chosen address is logged). With `secure` it only
    /// redirects to HTTPS.
    #[arg(long, env = "BROKER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// HTTPS port, used with `secure` (0 picks a free one). ACME's TLS-ALPN-01 challenge arrives here,
    /// so with `auto_cert` the ACME server must reach it as port 443 of `domain`.
    #[arg(long = "tls_port", env = "BROKER_TLS_PORT", default_value_t = 443)]
    pub tls_port: u16,

    /// Address to bind the plain-HTTP and HTTPS ports on. Beyond loopback, Broker refuses to start
    /// while `jwt_secret` or `admin_token` is its public default or shorter than 32 bytes.
    #[arg(long, env = "BROKER_BIND", default_value = "0.0.0.0")]
    pub bind: String,

    /// CORS origin: `*` or one origin.
    #[arg(long, env = "BROKER_ORIGIN", default_value = "*")]
    pub origin: String,

    /// Lifetime of issued JWTs, in seconds.
    #[arg(long = "jwt_expiry", env = "BROKER_JWT_EXPIRY", default_value_t = 86_400)]
    pub jwt_expiry: u64,

    /// HS256 secret for JWTs, at least 32 bytes (`openssl rand -base64 32`). The default is public
    /// and only accepted while Broker listens on loopback.
    #[arg(long = "jwt_secret", env = "BROKER_JWT_SECRET", default_value = DEFAULT_JWT_SECRET, hide_env_values = true, hide_default_value = true)]
    pub jwt_secret: Secret,

    /// Serve HTTPS (see `auto_cert`).
    #[arg(long, env = "BROKER_SECURE", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub secure: bool,

    /// With `secure`: obtain certificates through ACME instead of reading `key_path`/`cert_path`.
    #[arg(long = "auto_cert", env = "BROKER_AUTO_CERT", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub auto_cert: bool,

    /// PEM private key for your own certificate.
    #[arg(
        long = "key_path",
        env = "BROKER_KEY_PATH",
        default_value = "certs/private_key.pem"
    )]
    pub key_path: PathBuf,

    /// PEM certificate chain for your own certificate.
    #[arg(
        long = "cert_path",
        env = "BROKER_CERT_PATH",
        default_value = "certs/chain.pem"
    )]
    pub cert_path: PathBuf,

    /// Directory where ACME account and certificates are cached, so restarts do not order again.
    #[arg(long, env = "BROKER_CERTS", default_value = "certs")]
    pub certs: PathBuf,

    /// Directory of the embedded LMDB database.
    #[arg(long, env = "BROKER_DB", default_value = "db", global = true)]
    pub db: PathBuf,

    /// Largest size the database may grow to, in MiB (LMDB map size; address space, not disk).
    #[arg(
        long = "db_max_mb",
        env = "BROKER_DB_MAX_MB",
        default_value_t = 16_384,
        global = true
    )]
    pub db_max_mb: usize,

    /// Domain name for ACME certificates (and the host plain HTTP redirects to when a request names none).
    #[arg(long, env = "BROKER_DOMAIN", default_value = "localhost")]
    pub domain: String,

    /// ACME directory URL [default: Let's Encrypt production, or staging with `acme_staging`].
    #[arg(long = "acme_directory", env = "BROKER_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,

    /// Use Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
    #[arg(long = "acme_staging", env = "BROKER_ACME_STAGING", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub acme_staging: bool,

    /// Contact email given to the ACME server (expiry notices).
    #[arg(long = "acme_email", env = "BROKER_ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// PEM file of extra root certificates the ACME client trusts (for a private ACME server).
    #[arg(long = "acme_ca", env = "BROKER_ACME_CA")]
    pub acme_ca: Option<PathBuf>,

    /// Token that admin endpoints require, at least 32 bytes (`openssl rand -base64 32`). The default
    /// is public and only accepted while Broker listens on loopback.
    #[arg(long = "admin_token", env = "BROKER_ADMIN_TOKEN", default_value = DEFAULT_ADMIN_TOKEN, hide_env_values = true, hide_default_value = true)]
    pub admin_token: Secret,

    /// Wrong admin tokens one client address may send per minute; past it, every admin request from
    /// that address is answered 429 until the minute ends (right token or not, so guessing learns
    /// nothing). 10,000 addresses are tracked at once.
    #[arg(long = "admin_failures", env = "BROKER_ADMIN_FAILURES", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub admin_failures: u32,

    /// Inserts per second one user may make on this node, sustained (fractions allowed; 0: no
    /// limit); past it, and
    /// past `user_insert_burst` at once, 429 with `Retry-After`. `POST /admin/tenant_limits` sets
    /// other values for one tenant.
    #[arg(
        long = "user_insert_rate",
        env = "BROKER_USER_INSERT_RATE",
        default_value_t = 200.0
    )]
    pub user_insert_rate: f64,

    /// Inserts one user may make at once before `user_insert_rate` applies.
    #[arg(
        long = "user_insert_burst",
        env = "BROKER_USER_INSERT_BURST",
        default_value_t = 1_000
    )]
    pub user_insert_burst: u32,

    /// Inserts per second all users of one tenant may make on this node, sustained (0: no limit).
    #[arg(
        long = "tenant_insert_rate",
        env = "BROKER_TENANT_INSERT_RATE",
        default_value_t = 5_000.0
    )]
    pub tenant_insert_rate: f64,

    /// Inserts one tenant may make at once before `tenant_insert_rate` applies.
    #[arg(
        long = "tenant_insert_burst",
        env = "BROKER_TENANT_INSERT_BURST",
        default_value_t = 10_000
    )]
    pub tenant_insert_burst: u32,

    /// Password checks (logins, and Basic credentials not checked moments ago) per second from one
    /// client address (an IPv6 /64), sustained (0: no limit): argon2 is the most expensive thing an
    /// anonymous client can ask for. Behind a proxy every client has the proxy's address: raise it.
    #[arg(long = "login_rate", env = "BROKER_LOGIN_RATE", default_value_t = 10.0)]
    pub login_rate: f64,

    /// Password checks one address may ask for at once before `login_rate` applies.
    #[arg(long = "login_burst", env = "BROKER_LOGIN_BURST", default_value_t = 50)]
    pub login_burst: u32,

    /// Open streams (`/sse`) one user may hold on this node (0: no limit); past it, 429.
    #[arg(long = "user_streams", env = "BROKER_USER_STREAMS", default_value_t = 100)]
    pub user_streams: u32,

    /// Open streams all users of one tenant may hold on this node (0: no limit); past it, 429.
    #[arg(
        long = "tenant_streams",
        env = "BROKER_TENANT_STREAMS",
        default_value_t = 10_000
    )]
    pub tenant_streams: u32,

    /// Bytes one tenant's stored events may take (0: no limit); past it inserts get 507 naming
    /// the limit until events are erased. Counted on LMDB only: in cluster mode it must stay 0
    /// (`nats_max_mb` bounds the stream).
    #[arg(
        long = "tenant_max_bytes",
        env = "BROKER_TENANT_MAX_BYTES",
        default_value_t = 0
    )]
    pub tenant_max_bytes: u64,

    /// Remove events older than this (`30d`, `12h`, `15m`, `90s`; off when unset), except the
    /// newest event of each name.
    #[arg(long = "retain_age", env = "BROKER_RETAIN_AGE", value_parser = parse_age)]
    pub retain_age: Option<std::time::Duration>,

    /// Keep only the newest this many events of each name (0: all).
    #[arg(long = "retain_per_name", env = "BROKER_RETAIN_PER_NAME", default_value_t = 0)]
    pub retain_per_name: u32,

    /// Seconds between retention passes.
    #[arg(long = "retention_interval", env = "BROKER_RETENTION_INTERVAL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval: u64,

    /// Seconds one webhook request may take, connecting included; past it the attempt failed.
    #[arg(long = "webhook_timeout", env = "BROKER_WEBHOOK_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout: u64,

    /// Webhook requests in flight at once on this node (each webhook sends one at a time).
    #[arg(long = "webhook_concurrency", env = "BROKER_WEBHOOK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub webhook_concurrency: u32,

    /// Failed attempts in a row at one event before its webhook is paused (an admin resumes it).
    #[arg(long = "webhook_attempts", env = "BROKER_WEBHOOK_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_attempts: u32,

    /// Milliseconds to wait after a first failed webhook attempt; doubled after each (at most
    /// 5 minutes), less up to half at random.
    #[arg(long = "webhook_backoff_ms", env = "BROKER_WEBHOOK_BACKOFF_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub webhook_backoff_ms: u64,

    /// Hosts webhook URLs may name, comma-separated (empty: any host, internal addresses
    /// included; set it where the admin token is not the only guard of the network).
    #[arg(
        long = "webhook_hosts",
        env = "BROKER_WEBHOOK_HOSTS",
        default_value = "",
        value_delimiter = ','
    )]
    pub webhook_hosts: Vec<String>,

    /// Refuse weak passwords (zxcvbn score below 3).
    #[arg(long = "password_checker", env = "BROKER_PASSWORD_CHECKER", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub password_checker: bool,

    /// Open connections at most (SSE streams included); past it new connections are closed at once
    /// while open ones carry on. Each takes a file descriptor: keep it under the process's limit.
    #[arg(
        long = "max_connections",
        env = "BROKER_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// Seconds a client gets to send a request's headers (and a TLS handshake), and then its body.
    #[arg(long = "request_timeout", env = "BROKER_REQUEST_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,

    /// Seconds a response or stream write may make no progress (a client that stopped reading)
    /// before the connection is dropped and its memory released.
    #[arg(long = "write_timeout", env = "BROKER_WRITE_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,

    /// Threads that run argon2 (hashes and password checks); 0 means one per core. Each holds about
    /// 19 MiB while it works, so this also bounds the memory passwords can take.
    #[arg(
        long = "password_workers",
        env = "BROKER_PASSWORD_WORKERS",
        default_value_t = 0
    )]
    pub password_workers: usize,

    /// Password checks that may wait for a worker; past that, callers get 503 with `Retry-After`
    /// instead of queueing without end (64 waits at most about a second on 2 cores).
    #[arg(long = "password_queue", env = "BROKER_PASSWORD_QUEUE", default_value_t = 64)]
    pub password_queue: usize,

    /// Validity of password-reset TOTP codes, in seconds.
    #[arg(long = "totp_duration", env = "BROKER_TOTP_DURATION", default_value_t = 300)]
    pub totp_duration: u64,

    /// NTP servers (host:port, comma-separated) that correct the clock for JWTs and TOTP codes; empty
    /// to use the local clock only.
    #[arg(
        long = "ntp_servers",
        env = "BROKER_NTP_SERVERS",
        default_value = "pool.ntp.org:123,time.google.com:123"
    )]
    pub ntp_servers: String,

    /// Seconds between NTP checks.
    #[arg(long = "ntp_interval", env = "BROKER_NTP_INTERVAL", default_value_t = 3600)]
    pub ntp_interval: u64,

    /// SSE keep-alive comment interval in seconds; 0 (the default) sends none, because the npm
    /// `broker-client` mistakes comment lines for messages.
    #[arg(long = "keep_alive", env = "BROKER_KEEP_ALIVE", default_value_t = 0)]
    pub keep_alive: u64,

    /// Events a live SSE subscriber may fall behind before it catches up from the store.
    #[arg(long = "live_buffer", env = "BROKER_LIVE_BUFFER", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub live_buffer: u32,

    /// Directory of per-tenant guest components: `<tenant_name>.wasm`, and `default.wasm` for the rest.
    #[arg(long, env = "BROKER_GUESTS", default_value = "guests")]
    pub guests: PathBuf,

    /// Where compiled guests are cached so restarts do not recompile them (default: `<db>/guest-cache`).
    #[arg(long = "guest_cache", env = "BROKER_GUEST_CACHE")]
    pub guest_cache: Option<PathBuf>,

    /// Running-time limit of one guest call, in milliseconds (counted in 2 ms epoch ticks while the
    /// guest runs; time it spends waiting for a thread is not charged).
    #[arg(
        long = "guest_timeout_ms",
        env = "BROKER_GUEST_TIMEOUT_MS",
        default_value_t = 50
    )]
    pub guest_timeout_ms: u64,

    /// Memory limit of one guest instance, in MiB.
    #[arg(
        long = "guest_memory_mb",
        env = "BROKER_GUEST_MEMORY_MB",
        default_value_t = 32
    )]
    pub guest_memory_mb: u64,

    /// Skip the guest step entirely (for benchmarking the guest's cost only).
    #[arg(long = "bypass_guests", env = "BROKER_BYPASS_GUESTS", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub bypass_guests: bool,

    /// Enforce scopes per event name: inserting event `E` needs scope `E:post` (or `*:post`),
    /// receiving it on `/sse` needs `E:get` (or `*:get`). Off by default, as in the original;
    /// recommended on.
    #[arg(long = "enforce_scopes", env = "BROKER_ENFORCE_SCOPES", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enforce_scopes: bool,

    /// Serve Prometheus metrics at `GET /metrics` on this port (on `metrics_bind`; 0 picks a free
    /// one). Off when unset: a listener of its own, so metrics never show on the public port.
    #[arg(long = "metrics_port", env = "BROKER_METRICS_PORT")]
    pub metrics_port: Option<u16>,

    /// Address the metrics port binds to: loopback by default, so that only this machine (or a
    /// scraper told otherwise) reads them.
    #[arg(
        long = "metrics_bind",
        env = "BROKER_METRICS_BIND",
        default_value = "127.0.0.1"
    )]
    pub metrics_bind: String,

    /// Cluster mode: NATS server URLs, comma-separated (`nats://host:4222,...`). Every node gets the
    /// same `--nats`, `--jwt_secret` and `--admin_token`; events and users then live in JetStream
    /// instead of the local database. Unset: one node on the embedded LMDB.
    #[arg(long, env = "BROKER_NATS")]
    pub nats: Option<String>,

    /// Replicas of the JetStream stream and buckets Broker creates. Unset: 3 when `--nats` names
    /// three or more servers, else 1.
    #[arg(long = "nats_replicas", env = "BROKER_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,

    /// Cluster mode: the size of the JetStream event stream, in MiB. When full, inserts are refused
    /// 507 (nothing old is discarded). Each NATS server's `jetstream { max_file_store }` must hold it.
    #[arg(long = "nats_max_mb", env = "BROKER_NATS_MAX_MB", default_value_t = 1024)]
    pub nats_max_mb: usize,

    /// Log format: `text` (one human-readable line per event) or `json` (one JSON object per line,
    /// the same fields, for log collectors).
    #[arg(long = "log_format", env = "BROKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve the admin console at `/console` (it signs in with the admin token).
    #[arg(long, env = "BROKER_CONSOLE", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub console: bool,
}

/// What `broker <command>` does instead of serving.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Print the WIT contract guests implement (`wit/broker.wit`), for guest authors.
    Wit,
    /// Copy the database (`--db`), compacted and consistent, while Broker may be serving: to a file,
    /// or to `data.mdb` in a directory. Restore: stop Broker, put the copy in place as
    /// `<db>/data.mdb`, start Broker.
    Backup {
        /// A file, or a directory (made if missing) to hold `data.mdb`.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret flag value: usable as a `&str`, printed as `***` by `Debug`, so that logging the config
/// (or an error that carries it) cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

pub const DEFAULT_JWT_SECRET: &str = "secret";
/// The shortest `jwt_secret` and `admin_token` accepted beyond loopback: 256 bits, the size of
/// HS256's key, and out of reach of guessing.
pub const MIN_SECRET_BYTES: usize = 32;
pub const DEFAULT_ADMIN_TOKEN: &str = "letmein";
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// An age such as `30d`, `12h`, `15m`, `90s` or `90` (seconds), above zero.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => (&text[..at], unit),
        _ => (text, 's'),
    };
    let seconds_per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not an age such as 30d"))?;
    match number.checked_mul(seconds_per) {
        Some(seconds) if seconds > 0 => Ok(std::time::Duration::from_secs(seconds)),
        _ => Err(format!("{text:?}: an age above zero and below 500 billion years")),
    }
}

impl Config {
    /// Replicas for what Broker creates in JetStream: `--nats_replicas`, else 3 when `--nats`
    /// names three or more servers (each replica on its own server), else 1.
    pub fn nats_replicas(&self) -> usize {
        let servers = self.nats.as_deref().map_or(0, |urls| {
            urls.split(',').filter(|url| !url.trim().is_empty()).count()
        });
        self.nats_replicas
            .unwrap_or(if servers >= 3 { 3 } else { 1 })
            .max(1)
    }

    pub fn ntp_server_list(&self) -> Vec<String> {
        self.ntp_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The ACME directory to order from; an error when two flags disagree about it.
    pub fn acme_directory_url(&self) -> anyhow::Result<&str> {
        match (&self.acme_directory, self.acme_staging) {
            (Some(url), true) if url != LETS_ENCRYPT_STAGING => anyhow::bail!(
                "--acme_staging and --acme_directory={url} both choose the ACME server: pass only one"
            ),
            (Some(url), _) => Ok(url),
            (None, true) => Ok(LETS_ENCRYPT_STAGING),
            (None, false) => Ok(LETS_ENCRYPT_PRODUCTION),
        }
    }

    /// The number of argon2 threads: `--password_workers`, or one per core.
    pub fn password_workers(&self) -> usize {
        match self.password_workers {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        }
    }

    pub fn guest_cache_dir(&self) -> PathBuf {
        self.guest_cache
            .clone()
            .unwrap_or_else(|| self.db.join("guest-cache"))
    }

    /// Names of the secrets that are public (their default) or shorter than `MIN_SECRET_BYTES`.
    pub fn weak_secrets(&self) -> Vec<&'static str> {
        let weak = |value: &str, default: &str| value == default || value.len() < MIN_SECRET_BYTES;
        let mut names = Vec::new();
        if weak(&self.jwt_secret, DEFAULT_JWT_SECRET) {
            names.push("jwt_secret");
        }
        if weak(&self.admin_token, DEFAULT_ADMIN_TOKEN) {
            names.push("admin_token");
        }
        names
    }

    /// Refuses weak secrets on any address beyond loopback: with them anyone who reaches the port
    /// could sign their own JWTs or act as the admin. On loopback only they are a warning, so that
    /// the README's walk-through and the original's clients work on one machine unchanged.
    pub fn check_secrets(&self, listening: &[std::net::SocketAddr]) -> anyhow::Result<()> {
        let weak = self.weak_secrets();
        let exposed: Vec<String> = listening
            .iter()
            .filter(|address| !address.ip().is_loopback())
            .map(ToString::to_string)
            .collect();
        if exposed.is_empty() {
            for name in &weak {
                tracing::warn!(
                    "--{name} is its public default or shorter than {MIN_SECRET_BYTES} bytes: accepted on loopback only"
                );
            }
            return Ok(());
        }
        let Some(name) = weak.first() else {
            return Ok(());
        };
        anyhow::bail!(
            "--{name} is its public default or shorter than {MIN_SECRET_BYTES} bytes, and Broker would listen \
             on {} beyond this machine. Generate one with `openssl rand -base64 32` and pass it as --{name} \
             or in the BROKER_{} environment variable (or listen on loopback only: --bind 127.0.0.1)",
            exposed.join(", "),
            name.to_uppercase()
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Config;

    #[test]
    fn debug_output_never_shows_the_secrets() {
        let config = Config::parse_from([
            "broker",
            "--jwt_secret",
            "jwt-s3cret",
            "--admin_token",
            "adm1n-t0ken",
        ]);
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("jwt-s3cret") && !printed.contains("adm1n-t0ken"),
            "{printed}"
        );
        assert_eq!(&*config.jwt_secret, "jwt-s3cret");
    }

    #[test]
    fn three_nats_servers_mean_three_replicas_unless_told() {
        let replicas = |args: &[&str]| Config::parse_from([&["broker"], args].concat()).nats_replicas();
        assert_eq!(replicas(&[]), 1);
        assert_eq!(replicas(&["--nats", "nats://a:4222"]), 1);
        assert_eq!(replicas(&["--nats", "nats://a:4222,nats://b:4222"]), 1);
        assert_eq!(replicas(&["--nats", "nats://a,nats://b,nats://c"]), 3);
        assert_eq!(
            replicas(&["--nats", "nats://a,nats://b,nats://c,nats://d,nats://e"]),
            3
        );
        assert_eq!(
            replicas(&["--nats", "nats://a,nats://b,nats://c", "--nats_replicas", "1"]),
            1
        );
        assert_eq!(replicas(&["--nats", "nats://a", "--nats_replicas", "0"]), 1);
    }

    fn addresses(list: &[&str]) -> Vec<std::net::SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn weak_secrets_are_refused_beyond_loopback_only() {
        let strong = "k7Qm9vX2pL4sT8wZ1bN6cR3fH5jD0gA+";
        let defaults = Config::parse_from(["broker"]);
        assert_eq!(defaults.weak_secrets(), ["jwt_secret", "admin_token"]);
        assert!(
            defaults
                .check_secrets(&addresses(&["127.0.0.1:8080", "[::1]:443"]))
                .is_ok()
        );
        let refused = defaults.check_secrets(&addresses(&["0.0.0.0:8080"])).unwrap_err();
        let message = format!("{refused}");
        for needed in [
            "--jwt_secret",
            "openssl rand -base64 32",
            "BROKER_JWT_SECRET",
            "0.0.0.0:8080",
        ] {
            assert!(message.contains(needed), "{message}");
        }
        let short = Config::parse_from([
            "broker",
            "--jwt_secret",
            strong,
            "--admin_token",
            "0123456789abcdef",
        ]);
        assert_eq!(short.weak_secrets(), ["admin_token"], "16 bytes is too short");
        assert!(short.check_secrets(&addresses(&["192.0.2.1:8080"])).is_err());
        let good = Config::parse_from(["broker", "--jwt_secret", strong, "--admin_token", strong]);
        assert!(
            good.check_secrets(&addresses(&["0.0.0.0:8080", "[::]:443"]))
                .is_ok()
        );
    }
}
