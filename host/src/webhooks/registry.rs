//! Where webhooks are kept: in the user directory's values (LMDB, or the cluster's key-value
//! bucket), so that they outlive restarts and every node sees them.
//! - `webhooks`: the index, every webhook's id and tenant (changed by compare-and-set);
//! - `webhook/<id>`: what the admin registered (URL, filter, secret);
//! - `webhook_state/<id>`: its delivery: the cursor, the lease of the node delivering it, whether
//!   it is paused, and its failures. Every change is a compare-and-set of the whole record, so a
//!   node that lost the lease cannot move the cursor.
//!
//! A removed record is stored empty (the directory has no delete of values).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::storage::{StorageError, StorageResult};
use crate::user_directory::UserDirectory;

const INDEX: &str = "webhooks";

fn config_key(id: &str) -> String {
    format!("webhook/{id}")
}

fn state_key(id: &str) -> String {
    format!("webhook_state/{id}")
}

/// One index entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub id: String,
    pub tenant: String,
}

/// What an admin registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// The filter, in the syntax of `/sse?events=` (empty: every event).
    pub events: String,
    /// `whsec_…`; never answered or logged.
    pub secret: String,
    pub created_ms: u64,
}

/// A webhook's delivery, shared by every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// The sequence up to which the tenant's events were delivered (or did not match).
    pub cursor: u64,
    /// The node delivering it, and until when (ms since the epoch) unless it renews.
    pub holder: Option<String>,
    pub until_ms: u64,
    pub paused: bool,
    /// Failed attempts in a row at the event after the cursor.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Events delivered (answered 2xx) in all.
    pub delivered: u64,
}

/// A state record as read, with its bytes: the expected value of the next compare-and-set.
#[derive(Clone, Debug)]
pub struct StateRecord {
    pub raw: Vec<u8>,
    pub state: DeliveryState,
}

/// Why the index refused a new webhook.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexFull {
    Tenant(usize),
    All(usize),
}

#[derive(Clone)]
pub struct Registry {
    values: Arc<dyn UserDirectory>,
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Option<T> {
    if bytes.is_empty() {
        return None;
    }
    // Written from the same types: an unreadable record is a bug, logged, and treated as absent.
    serde_json::from_slice(bytes)
        .inspect_err(|error| tracing::error!(key, %error, "an unreadable webhook record"))
        .ok()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("webhook records serialize")
}

impl Registry {
    pub fn new(values: Arc<dyn UserDirectory>) -> Self {
        Self { values }
    }

    /// Every webhook's id and tenant.
    pub async fn index(&self) -> StorageResult<Vec<Listed>> {
        Ok(self.index_record().await?.1)
    }

    async fn index_record(&self) -> StorageResult<(Option<Vec<u8>>, Vec<Listed>)> {
        let raw = self.values.value(INDEX).await?;
        let listed = match raw.as_deref() {
            None | Some([]) => Vec::new(),
            // An unreadable index is an error, never an empty list: the next change would write
            // over every registration.
            Some(bytes) => serde_json::from_slice(bytes).map_err(|error| {
                StorageError::Backend(format!("the webhook index is unreadable: {error}"))
            })?,
        };
        Ok((raw, listed))
    }

    /// Changes the index by compare-and-set: `change` runs on the current list (again if another
    /// writer came first) and may refuse.
    async fn change_index<E>(
        &self,
        change: impl Fn(&mut Vec<Listed>) -> Result<(), E>,
    ) -> StorageResult<Result<(), E>> {
        loop {
            let (raw, mut listed) = self.index_record().await?;
            if let Err(refused) = change(&mut listed) {
                return Ok(Err(refused));
            }
            if self.values.replace_value(INDEX, raw, encode(&listed)).await? {
                return Ok(Ok(()));
            }
        }
    }

    pub async fn config(&self, id: &str) -> StorageResult<Option<WebhookConfig>> {
        Ok(self.config_record(id).await?.map(|(_, config)| config))
    }

    /// Webhook `id`'s registration with its bytes, the expected value of `replace_config`.
    pub async fn config_record(&self, id: &str) -> StorageResult<Option<(Vec<u8>, WebhookConfig)>> {
        let key = config_key(id);
        let Some(raw) = self.values.value(&key).await? else {
            return Ok(None);
        };
        Ok(decode(&key, &raw).map(|config| (raw, config)))
    }

    /// Replaces the registration read as `current`; `false` if it changed or was removed since
    /// (a removed webhook's secret is never written back).
    pub async fn replace_config(&self, current: Vec<u8>, config: &WebhookConfig) -> StorageResult<bool> {
        self.values
            .replace_value(&config_key(&config.id), Some(current), encode(config))
            .await
    }

    /// Registers `config`, delivering from `cursor` on, unless its tenant already has
    /// `per_tenant` webhooks or all tenants `total`.
    pub async fn add(
        &self,
        config: &WebhookConfig,
        cursor: u64,
        per_tenant: usize,
        total: usize,
    ) -> StorageResult<Result<(), IndexFull>> {
        // The records first: a listed id always has them.
        self.values
            .set_value(&config_key(&config.id), encode(config))
            .await?;
        let state = DeliveryState {
            cursor,
            ..DeliveryState::default()
        };
        self.values
            .set_value(&state_key(&config.id), encode(&state))
            .await?;
        let entry = Listed {
            id: config.id.clone(),
            tenant: config.tenant.clone(),
        };
        let added = self
            .change_index(|listed| {
                if listed.len() >= total {
                    return Err(IndexFull::All(total));
                }
                if listed.iter().filter(|l| l.tenant == entry.tenant).count() >= per_tenant {
                    return Err(IndexFull::Tenant(per_tenant));
                }
                listed.push(entry.clone());
                Ok(())
            })
            .await?;
        if added.is_err() {
            // Refused: the records go too, so that refusals leave no secret and take no room.
            self.clear(&config.id).await?;
        }
        Ok(added)
    }

    async fn clear(&self, id: &str) -> StorageResult<()> {
        self.values.set_value(&config_key(id), Vec::new()).await?;
        self.values.set_value(&state_key(id), Vec::new()).await
    }

    /// Removes webhook `id`; answers whether it was listed.
    pub async fn remove(&self, id: &str) -> StorageResult<bool> {
        let removed = self
            .change_index(|listed| {
                let before = listed.len();
                listed.retain(|l| l.id != id);
                if listed.len() == before { Err(()) } else { Ok(()) }
            })
            .await?
            .is_ok();
        if removed {
            self.clear(id).await?;
        }
        Ok(removed)
    }

    /// Webhook `id`'s delivery record (`None` once it is removed).
    pub async fn state(&self, id: &str) -> StorageResult<Option<StateRecord>> {
        let key = state_key(id);
        let Some(raw) = self.values.value(&key).await? else {
            return Ok(None);
        };
        Ok(decode(&key, &raw).map(|state| StateRecord { raw, state }))
    }

    /// Replaces `current` with `next`; answers the new record, or `None` if another writer came
    /// first (or the webhook was removed).
    pub async fn replace_state(
        &self,
        id: &str,
        current: &StateRecord,
        next: DeliveryState,
    ) -> StorageResult<Option<StateRecord>> {
        let raw = encode(&next);
        let stored = self
            .values
            .replace_value(&state_key(id), Some(current.raw.clone()), raw.clone())
            .await?;
        Ok(stored.then_some(StateRecord { raw, state: next }))
    }

    /// Applies `change` to webhook `id`'s delivery record by compare-and-set (again on a newer
    /// record if another writer came first); `None` if it is gone.
    pub async fn update_state(
        &self,
        id: &str,
        change: impl Fn(&mut DeliveryState),
    ) -> StorageResult<Option<StateRecord>> {
        loop {
            let Some(current) = self.state(id).await? else {
                return Ok(None);
            };
            let mut next = current.state.clone();
            change(&mut next);
            if let Some(stored) = self.replace_state(id, &current, next).await? {
                return Ok(Some(stored));
            }
        }
    }
}
