//! The wiring: binds the listeners, opens storage (LMDB, or JetStream with `--nats`), builds the
//! services and the HTTP state from the flags, and serves until shutdown. The binary, the tests
//! and the benchmarks all call `run`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::auth::Authenticator;
use crate::auth::attempts::{AttemptLimiter, MAX_CODE_FAILURES};
use crate::auth::biscuit::BiscuitIssuer;
use crate::auth::jwt::JwtKeys;
use crate::auth::password_workers::PasswordWorkers;
use crate::cluster::events::JetStreamLog;
use crate::cluster::users::KvUsers;
use crate::config::Config;
use crate::erasure::Erasure;
use crate::event_log::EventLog;
use crate::fanout::Fanout;
use crate::history::History;
use crate::http::redirect::HttpsRedirect;
use crate::http::state::AppState;
use crate::insert::Inserts;
use crate::limits::buckets::Rate;
use crate::limits::{Limits, Settings};
use crate::presence::Presence;
use crate::retention::Retention;
use crate::store::writer::EventWriter;
use crate::store::{LmdbEventLog, LmdbUsers, Store};
use crate::subscribe::Streams;
use crate::tls::TlsTerminator;
use crate::user_directory::{UserChanged, UserDirectory};
use crate::webhooks::Webhooks;
use crate::{clock, cluster, guests, http, server};

/// How long the writer gets to commit what is queued after the server stops.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets Broker serves: the plain-HTTP port always; the HTTPS port with `--secure`; the
/// metrics port with `--metrics_port`.
pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `--port`, and `--tls_port` when `--secure`, on `--bind`; `--metrics_port` on
    /// `--metrics_bind`.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let bind = |address: &str, port: u16| {
            let address = address.to_owned();
            async move {
                TcpListener::bind((address.as_str(), port))
                    .await
                    .with_context(|| format!("binding {address}:{port}"))
            }
        };
        Ok(Self {
            plain: bind(&config.bind, config.port).await?,
            tls: match config.secure {
                true => Some(bind(&config.bind, config.tls_port).await?),
                false => None,
            },
            metrics: match config.metrics_port {
                Some(port) => Some(bind(&config.metrics_bind, port).await?),
                None => None,
            },
        })
    }

    /// The addresses the API is served on (plain and HTTPS; metrics carry no secrets).
    fn api_addresses(&self) -> std::io::Result<Vec<std::net::SocketAddr>> {
        let mut addresses = vec![self.plain.local_addr()?];
        if let Some(tls) = &self.tls {
            addresses.push(tls.local_addr()?);
        }
        Ok(addresses)
    }
}

/// The two storage seams, as chosen by `--nats`.
struct Storage {
    events: Arc<dyn EventLog>,
    users: Arc<dyn UserDirectory>,
    /// The LMDB event writer, joined at exit so that queued commits finish.
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

/// LMDB on this machine, or JetStream with `--nats`; either feeds `fanout` with committed events
/// and user changes.
async fn open_storage(
    config: &Config,
    fanout: &Arc<Fanout>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Storage> {
    let notifier = fanout.clone();
    let changed: UserChanged = Arc::new(move |username: &str| notifier.user_changed(username));
    if let Some(urls) = &config.nats {
        // JetStream counts bytes per stream, not per tenant: a quota Broker cannot keep is refused.
        anyhow::ensure!(
            config.tenant_max_bytes == 0,
            "--tenant_max_bytes is counted on LMDB only; in cluster mode --nats_max_mb bounds the event stream"
        );
        let cluster = Arc::new(cluster::Cluster::connect(config, urls).await?);
        let events = JetStreamLog::start(cluster.clone(), fanout.clone(), shutdown.clone())
            .await
            .context("starting the JetStream event log")?;
        tracing::info!(
            replicas = config.nats_replicas(),
            "cluster mode: events and users in NATS JetStream"
        );
        return Ok(Storage {
            events: Arc::new(events),
            users: Arc::new(KvUsers::start(cluster, changed, shutdown.clone())),
            writer_thread: None,
        });
    }
    let store = Arc::new(
        Store::open(&config.db, config.db_max_mb)
            .with_context(|| format!("opening the database at {}", config.db.display()))?,
    );
    let publisher = fanout.clone();
    let (writer, writer_thread) = EventWriter::start(store.clone(), move |batch| {
        publisher.publish(batch.iter().map(|event| &**event));
    });
    Ok(Storage {
        events: Arc::new(LmdbEventLog::new(store.clone(), writer)),
        users: Arc::new(LmdbUsers::new(store, changed)),
        writer_thread: Some(writer_thread),
    })
}

/// The bounds every connection is held to, from their flags.
fn connection_limits(config: &Config) -> server::ConnectionLimits {
    server::ConnectionLimits {
        max_connections: config.max_connections,
        header_timeout: Duration::from_secs(config.request_timeout),
        write_timeout: Duration::from_secs(config.write_timeout),
    }
}

/// The per-user and per-tenant limits the flags set.
fn limit_settings(config: &Config) -> Settings {
    Settings {
        user_inserts: Rate::new(config.user_insert_rate, config.user_insert_burst),
        tenant_inserts: Rate::new(config.tenant_insert_rate, config.tenant_insert_burst),
        user_streams: config.user_streams,
        tenant_streams: config.tenant_streams,
        tenant_max_bytes: config.tenant_max_bytes,
    }
}

/// The webhook flags.
fn webhook_settings(config: &Config) -> crate::webhooks::Settings {
    crate::webhooks::Settings {
        timeout: Duration::from_secs(config.webhook_timeout),
        concurrency: config.webhook_concurrency as usize,
        attempts: config.webhook_attempts,
        backoff: Duration::from_millis(config.webhook_backoff_ms),
        hosts: config
            .webhook_hosts
            .iter()
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .collect(),
        shared_store: config.nats.is_some(),
    }
}

/// Runs Broker on `listeners` until `shutdown` is cancelled; returns once pending commits are done.
/// The binary and the benchmarks both call this.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Public or short secrets beyond loopback stop start-up before anything is opened.
    config.check_secrets(&listeners.api_addresses()?)?;
    // Certificates first: a bad key or chain stops start-up before anything is opened.
    let tls = match (config.secure, listeners.tls) {
        (false, _) => None,
        (true, Some(listener)) => Some((
            listener,
            Arc::new(TlsTerminator::start(&config, shutdown.clone())?),
        )),
        (true, None) => anyhow::bail!("--secure=true needs an HTTPS listener"),
    };
    let fanout = Arc::new(Fanout::new(config.live_buffer as usize));
    let Storage {
        events,
        users,
        writer_thread,
    } = open_storage(&config, &fanout, &shutdown).await?;
    let clock = Arc::new(clock::Clock::default());
    tokio::spawn(clock::sync_with_ntp(
        clock.clone(),
        config.ntp_server_list(),
        Duration::from_secs(config.ntp_interval.max(1)),
        shutdown.clone(),
    ));
    Retention {
        age: config.retain_age,
        per_name: config.retain_per_name,
        every: Duration::from_secs(config.retention_interval),
    }
    .spawn(events.clone(), clock.clone(), shutdown.clone());
    let webhooks = Webhooks::start(
        webhook_settings(&config),
        users.clone(),
        events.clone(),
        fanout.clone(),
        clock.clone(),
        shutdown.clone(),
    )
    .context("starting webhook delivery")?;
    let guests = guests::Guests::start(&config, events.clone(), shutdown.clone())
        .await
        .context("starting the guest engine")?;
    if let Some(listener) = listeners.metrics {
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        let answer = |request: Request<Incoming>| std::future::ready(http::metrics::answer(&request));
        tokio::spawn(server::serve(
            listener,
            None,
            connection_limits(&config),
            shutdown.clone(),
            answer,
        ));
    }
    let redirect_host = config.domain.clone();
    let limits = connection_limits(&config);
    let user_limits = Limits::start(
        limit_settings(&config),
        Rate::new(config.login_rate, config.login_burst),
        users.clone(),
        events.clone(),
        shutdown.clone(),
    );
    let passwords = Arc::new(PasswordWorkers::start(
        config.password_workers(),
        config.password_queue,
    ));
    let state = Arc::new(AppState {
        erasure: Erasure::new(users.clone(), events.clone()),
        accounts: Accounts::new(
            users.clone(),
            passwords.clone(),
            clock.clone(),
            config.password_checker,
            config.totp_duration,
        ),
        auth: Authenticator::new(
            JwtKeys::new(&config.jwt_secret, config.jwt_expiry),
            users.clone(),
            passwords,
            user_limits.clone(),
            clock.clone(),
        ),
        inserts: Inserts::new(
            events.clone(),
            guests.clone(),
            clock.clone(),
            config.enforce_scopes,
            config.bypass_guests,
        ),
        history: History::new(events.clone(), guests.clone(), config.enforce_scopes),
        streams: Arc::new(Streams::new(
            events.clone(),
            users.clone(),
            guests.clone(),
            fanout,
            Presence::start(
                config.nats.is_some().then(|| users.clone()),
                clock.clone(),
                shutdown.clone(),
            ),
            clock.clone(),
            shutdown.clone(),
            (config.keep_alive > 0).then(|| Duration::from_secs(config.keep_alive)),
            config.enforce_scopes,
        )),
        biscuit: BiscuitIssuer::load(&*users)
            .await
            .context("loading the biscuit root key")?,
        login_codes: AttemptLimiter::new(
            "login two-factor code",
            Duration::from_secs(30),
            MAX_CODE_FAILURES,
        ),
        reset_codes: AttemptLimiter::new(
            "password-reset code",
            Duration::from_secs(config.totp_duration.max(1)),
            MAX_CODE_FAILURES,
        ),
        admin_tokens: AttemptLimiter::new("admin token", Duration::from_secs(60), config.admin_failures),
        guests,
        webhooks,
        limits: user_limits,
        clock,
        config,
        users,
    });
    // The handler owns the state: once the servers return, the last handle on the writer goes.
    let api = move |request| http::handle(state.clone(), request);
    let plain = listeners.plain;
    let serving = async move {
        match tls {
            None => {
                // Logged once everything is ready: tests and supervisors wait for this line.
                tracing::info!("broker listening on http://{}", plain.local_addr()?);
                server::serve(plain, None, limits, shutdown, api).await;
            }
            Some((listener, terminator)) => {
                let https = listener.local_addr()?;
                let redirect = HttpsRedirect {
                    fallback_host: redirect_host,
                    tls_port: https.port(),
                };
                tracing::info!("plain HTTP on {} only redirects to HTTPS", plain.local_addr()?);
                tracing::info!("broker listening on https://{https}");
                let redirect =
                    move |request: Request<Incoming>| std::future::ready(redirect.answer(&request));
                tokio::join!(
                    server::serve(listener, Some(terminator), limits, shutdown.clone(), api),
                    server::serve(plain, None, limits, shutdown, redirect),
                );
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        served = serving => served?,
        () = events.stopped() => {
            // Serving on would answer every insert 503 forever: stop loudly, so that a supervisor
            // (systemd's Restart=, a container runtime) starts a healthy process.
            tracing::error!("the event writer stopped unexpectedly; stopping Broker");
            anyhow::bail!("the event writer stopped unexpectedly");
        }
    }
    tracing::info!("connections closed");
    drop(events);
    // The writer stops once the last handle (held by the state, dropped with the connections) is gone.
    if let Some(writer_thread) = writer_thread {
        let joined = tokio::task::spawn_blocking(move || writer_thread.join());
        if tokio::time::timeout(WRITER_DRAIN_TIMEOUT, joined).await.is_err() {
            tracing::warn!("event writer still busy at exit");
        }
    }
    tracing::info!("stopped");
    Ok(())
}
