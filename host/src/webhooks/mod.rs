//! Webhooks: an admin registers a URL per tenant with an event filter and a signing secret;
//! Broker POSTs every committed event that matches, in commit order, at least once, signed the
//! Standard Webhooks way. Registrations and delivery state live in the user directory's values
//! (`registry`), so they outlive restarts and every node of a cluster shares them; one node at a
//! time delivers each webhook, under a lease (`delivery`). The events come from the event log
//! (`EventLog::events_after` from the webhook's cursor), so the same code serves LMDB and
//! JetStream; the live fan-out only wakes a delivery up.

mod client;
mod delivery;
mod registry;
mod signature;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;

pub use self::client::MAX_URL_BYTES;
use self::client::{Sender, check_url};
pub use self::delivery::{LEASE, MAX_BACKOFF};
use self::delivery::{LOCAL_LEASE, LOCAL_NODE};
use self::delivery::{Prepared, Shared, Worker};
use self::registry::{DeliveryState, IndexFull, Registry, WebhookConfig};
use self::signature::SigningKey;
use crate::clock::Clock;
use crate::event_log::EventLog;
use crate::fanout::Fanout;
use crate::filter::EventFilter;
use crate::storage::StorageError;
use crate::user_directory::UserDirectory;

/// Webhooks one tenant may have.
pub const MAX_PER_TENANT: usize = 16;
/// Webhooks all tenants may have together.
pub const MAX_TOTAL: usize = 1000;
/// How often each node reads the registrations again: a webhook registered, changed or removed
/// on another node is delivered (or stops) within this long.
const REFRESH: Duration = Duration::from_secs(2);

/// The webhook flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time for one request, connection included (`--webhook_timeout`).
    pub timeout: Duration,
    /// Requests in flight on one node (`--webhook_concurrency`).
    pub concurrency: usize,
    /// Failed attempts in a row before a webhook is paused (`--webhook_attempts`).
    pub attempts: u32,
    /// The wait after a first failure, doubled after each (`--webhook_backoff_ms`).
    pub backoff: Duration,
    /// The hosts webhook URLs may name (`--webhook_hosts`); empty: any.
    pub hosts: Vec<String>,
    /// Whether other nodes share the store (cluster mode), so that leases must expire quickly
    /// for another node to take over from one that died.
    pub shared_store: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error("no webhook has this id")]
    NotFound,
    #[error("{0}")]
    Full(String),
    #[error("the webhook was changed at the same time: read it and try again")]
    Conflict,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A webhook as the admin API answers it: never its secret.
#[derive(Debug, Serialize)]
pub struct View {
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// The filter (empty: every event).
    pub events: String,
    pub created_ms: u64,
    /// `active`, `retrying` (the last attempt failed) or `paused`.
    pub state: &'static str,
    /// The sequence up to which events were delivered.
    pub cursor: u64,
    pub delivered: u64,
    pub failures: u32,
    pub last_error: Option<String>,
}

fn view(config: &WebhookConfig, state: &DeliveryState) -> View {
    View {
        id: config.id.clone(),
        tenant: config.tenant.clone(),
        url: config.url.clone(),
        events: config.events.clone(),
        created_ms: config.created_ms,
        state: if state.paused {
            "paused"
        } else if state.failures > 0 {
            "retrying"
        } else {
            "active"
        },
        cursor: state.cursor,
        delivered: state.delivered,
        failures: state.failures,
        last_error: state.last_error.clone(),
    }
}

/// Ids are 32 lowercase hex digits (a simple uuid); anything else names no webhook, and is
/// answered so before it can reach storage as an oversized key.
fn check_id(id: &str) -> Result<(), WebhookError> {
    let valid = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(WebhookError::NotFound)
    }
}

/// A URL as the log shows it: without its query, which some receivers use for a token.
fn loggable(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// What an admin changes of a webhook; an absent field stays.
#[derive(Debug, Default)]
pub struct Change {
    pub url: Option<String>,
    pub events: Option<String>,
    pub secret: Option<String>,
}

pub struct Webhooks {
    registry: Registry,
    shared: Arc<Shared>,
    hosts: Vec<String>,
    /// Wakes this node's manager after a change made here, so that it need not wait `REFRESH`.
    changed: Arc<Notify>,
}

impl Webhooks {
    /// Starts delivering every registered webhook this node can take, until `shutdown`.
    pub fn start(
        settings: Settings,
        values: Arc<dyn UserDirectory>,
        events: Arc<dyn EventLog>,
        fanout: Arc<Fanout>,
        clock: Arc<Clock>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let registry = Registry::new(values);
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            events,
            fanout,
            clock,
            sender: Sender::new(settings.timeout)?,
            permits: Semaphore::new(settings.concurrency.max(1)),
            attempts: settings.attempts.max(1),
            backoff: settings.backoff,
            node: match settings.shared_store {
                true => uuid::Uuid::new_v4().simple().to_string(),
                false => LOCAL_NODE.to_owned(),
            },
            lease: if settings.shared_store { LEASE } else { LOCAL_LEASE },
        });
        let webhooks = Arc::new(Self {
            registry,
            shared: shared.clone(),
            hosts: settings.hosts,
            changed: Arc::default(),
        });
        tokio::spawn(manage(webhooks.clone(), shutdown));
        Ok(webhooks)
    }

    /// Parses a registration: the URL (http(s), on an allowed host), the filter, the secret.
    fn prepare(&self, config: WebhookConfig) -> Result<Prepared, WebhookError> {
        let url = check_url(&config.url, &self.hosts).map_err(WebhookError::Invalid)?;
        let filter = match config.events.as_str() {
            "" => EventFilter::default(),
            text => EventFilter::parse(text).map_err(WebhookError::Invalid)?,
        };
        let key = SigningKey::parse(&config.secret).map_err(WebhookError::Invalid)?;
        Ok(Prepared {
            config,
            url,
            key,
            filter,
        })
    }

    /// Registers a webhook for `tenant`: it receives the events committed from now on.
    pub async fn create(
        &self,
        tenant: &str,
        url: String,
        events: String,
        secret: String,
    ) -> Result<View, WebhookError> {
        crate::validate::name("tenant", tenant).map_err(WebhookError::Invalid)?;
        let config = WebhookConfig {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenant: tenant.to_owned(),
            url,
            events,
            secret,
            created_ms: self.shared.clock.now_millis(),
        };
        let prepared = self.prepare(config)?;
        let cursor = self.shared.events.newest_seq(tenant).await?;
        let added = self
            .registry
            .add(&prepared.config, cursor, MAX_PER_TENANT, MAX_TOTAL)
            .await?;
        added.map_err(|full| {
            WebhookError::Full(match full {
                IndexFull::Tenant(max) => format!("a tenant may have at most {max} webhooks"),
                IndexFull::All(max) => format!("there may be at most {max} webhooks in all"),
            })
        })?;
        let url = loggable(&prepared.url);
        tracing::info!(
            webhook = prepared.config.id,
            tenant,
            url,
            events = prepared.config.events,
            "webhook registered"
        );
        self.changed.notify_one();
        let state = DeliveryState {
            cursor,
            ..DeliveryState::default()
        };
        Ok(view(&prepared.config, &state))
    }

    /// Every webhook (of `tenant`, if given), with its delivery state.
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<View>, WebhookError> {
        if let Some(tenant) = tenant {
            crate::validate::name("tenant", tenant).map_err(WebhookError::Invalid)?;
        }
        let mut views = Vec::new();
        for listed in self.registry.index().await? {
            if tenant.is_some_and(|tenant| tenant != listed.tenant) {
                continue;
            }
            match self.get(&listed.id).await {
                Ok(view) => views.push(view),
                // Removed since the index was read.
                Err(WebhookError::NotFound) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(views)
    }

    pub async fn get(&self, id: &str) -> Result<View, WebhookError> {
        check_id(id)?;
        let config = self.registry.config(id).await?.ok_or(WebhookError::NotFound)?;
        let state = self.registry.state(id).await?.ok_or(WebhookError::NotFound)?;
        Ok(view(&config, &state.state))
    }

    /// Changes a webhook's URL, filter or secret; deliveries after the change use them.
    pub async fn update(&self, id: &str, change: Change) -> Result<View, WebhookError> {
        check_id(id)?;
        let (current, mut config) = self
            .registry
            .config_record(id)
            .await?
            .ok_or(WebhookError::NotFound)?;
        if let Some(url) = change.url {
            config.url = url;
        }
        if let Some(events) = change.events {
            config.events = events;
        }
        if let Some(secret) = change.secret {
            config.secret = secret;
        }
        let prepared = self.prepare(config)?;
        // Against the record read: a webhook deleted meanwhile stays deleted (404), and of two
        // changes at once the second is refused rather than half applied.
        if !self.registry.replace_config(current, &prepared.config).await? {
            return match self.registry.config(id).await? {
                Some(_) => Err(WebhookError::Conflict),
                None => Err(WebhookError::NotFound),
            };
        }
        let url = loggable(&prepared.url);
        tracing::info!(
            webhook = id,
            url,
            events = prepared.config.events,
            "webhook changed"
        );
        self.changed.notify_one();
        self.get(id).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        check_id(id)?;
        if !self.registry.remove(id).await? {
            return Err(WebhookError::NotFound);
        }
        tracing::info!(webhook = id, "webhook removed");
        self.changed.notify_one();
        Ok(())
    }

    /// Resumes a paused webhook: it tries the event it stopped at again, with a fresh count of
    /// attempts. A webhook that is not paused stays as it is.
    pub async fn resume(&self, id: &str) -> Result<View, WebhookError> {
        check_id(id)?;
        let resumed = self
            .registry
            .update_state(id, |state| {
                if state.paused {
                    state.paused = false;
                    state.failures = 0;
                }
            })
            .await?;
        if resumed.is_none() {
            return Err(WebhookError::NotFound);
        }
        tracing::info!(webhook = id, "webhook resumed");
        self.get(id).await
    }

    /// The tenant's webhooks are removed with it.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<(), WebhookError> {
        for listed in self.registry.index().await? {
            if listed.tenant == tenant {
                self.registry.remove(&listed.id).await?;
            }
        }
        self.changed.notify_one();
        Ok(())
    }
}

/// A running delivery of this node.
struct Running {
    config: watch::Sender<Arc<Prepared>>,
    stop: CancellationToken,
}

/// Keeps one delivery task per registered webhook on this node, matching the registry: read
/// every `REFRESH`, or at once after a change made here.
async fn manage(webhooks: Arc<Webhooks>, shutdown: CancellationToken) {
    let mut running: HashMap<String, Running> = HashMap::new();
    // Registrations that cannot be delivered (a URL host no longer in --webhook_hosts), logged once.
    let mut refused: HashMap<String, WebhookConfig> = HashMap::new();
    loop {
        match webhooks.registry.index().await {
            Ok(listed) => {
                running.retain(|id, run| {
                    let keep = listed.iter().any(|l| &l.id == id);
                    if !keep {
                        run.stop.cancel();
                    }
                    keep
                });
                refused.retain(|id, _| listed.iter().any(|l| &l.id == id));
                for entry in listed {
                    let config = match webhooks.registry.config(&entry.id).await {
                        Ok(Some(config)) => config,
                        Ok(None) => continue,
                        Err(error) => {
                            tracing::warn!(webhook = entry.id, %error, "could not read a webhook");
                            continue;
                        }
                    };
                    let current = running
                        .get(&entry.id)
                        .map(|run| run.config.borrow().config.clone());
                    if current.as_ref() == Some(&config) || refused.get(&entry.id) == Some(&config) {
                        continue;
                    }
                    let prepared = match webhooks.prepare(config.clone()) {
                        Ok(prepared) => Arc::new(prepared),
                        Err(error) => {
                            tracing::error!(webhook = entry.id, %error, "a webhook cannot be delivered: change its URL");
                            refused.insert(entry.id.clone(), config);
                            if let Some(run) = running.remove(&entry.id) {
                                run.stop.cancel();
                            }
                            continue;
                        }
                    };
                    refused.remove(&entry.id);
                    if let Some(run) = running.get(&entry.id) {
                        run.config.send_replace(prepared);
                        continue;
                    }
                    let (config, receiver) = watch::channel(prepared);
                    let stop = shutdown.child_token();
                    tokio::spawn(
                        Worker {
                            id: entry.id.clone(),
                            shared: webhooks.shared.clone(),
                            config: receiver,
                            stop: stop.clone(),
                        }
                        .run(),
                    );
                    running.insert(entry.id, Running { config, stop });
                }
            }
            Err(error) => tracing::warn!(%error, "could not read the webhooks; trying again"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = webhooks.changed.notified() => {}
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}
