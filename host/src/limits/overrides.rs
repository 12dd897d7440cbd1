//! Per-tenant limits set through the admin API, kept in the user directory's values (LMDB, or the
//! cluster's key-value bucket) so that they outlive restarts and reach every node. Each node reads a
//! tenant's override again when its copy is older than `REFRESH`: a change takes effect everywhere
//! within that time, without a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::storage::StorageResult;
use crate::user_directory::UserDirectory;

/// How old a node's copy of a tenant's override may be.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Tenants whose override a node keeps at once; past it the copies are read again.
const MAX_CACHED: usize = 10_000;

/// What a tenant gets instead of the defaults; an absent field keeps the flag's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_insert_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_insert_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_insert_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_insert_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_streams: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_streams: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_max_bytes: Option<u64>,
}

impl TenantLimits {
    /// Rates are finite and not negative (0: no limit).
    pub fn check(&self) -> Result<(), String> {
        let rates = [
            ("user_insert_rate", self.user_insert_rate),
            ("tenant_insert_rate", self.tenant_insert_rate),
        ];
        for (name, rate) in rates {
            if let Some(rate) = rate
                && !(rate.is_finite() && rate >= 0.0)
            {
                return Err(format!("{name} must be a number of at least 0 (0: no limit)"));
            }
        }
        Ok(())
    }
}

fn key(tenant: &str) -> String {
    format!("tenant_limits/{tenant}")
}

pub struct Overrides {
    values: Arc<dyn UserDirectory>,
    copies: Mutex<HashMap<String, (Instant, TenantLimits)>>,
}

impl Overrides {
    pub fn new(values: Arc<dyn UserDirectory>) -> Self {
        Self {
            values,
            copies: Mutex::default(),
        }
    }

    /// `tenant`'s override (empty when none was set). While the store cannot be read, the last
    /// copy (or none) serves: limits must not turn a storage hiccup into refusals of their own.
    pub async fn of(&self, tenant: &str) -> TenantLimits {
        let cached = {
            let copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
            copies.get(tenant).cloned()
        };
        if let Some((read_at, limits)) = &cached
            && read_at.elapsed() < REFRESH
        {
            return limits.clone();
        }
        match self.read(tenant).await {
            Ok(limits) => {
                self.remember(tenant, limits.clone());
                limits
            }
            Err(error) => {
                tracing::warn!(tenant, %error, "could not read the tenant's limits; using the last known");
                cached.map(|(_, limits)| limits).unwrap_or_default()
            }
        }
    }

    async fn read(&self, tenant: &str) -> StorageResult<TenantLimits> {
        let Some(bytes) = self.values.value(&key(tenant)).await? else {
            return Ok(TenantLimits::default());
        };
        // Written by `set` from the same type: an unreadable value is a bug, not a client's error.
        Ok(serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::error!(tenant, %error, "the tenant's stored limits are unreadable; using the defaults");
            TenantLimits::default()
        }))
    }

    /// Stores `limits` as `tenant`'s override (replacing the previous one whole).
    pub async fn set(&self, tenant: &str, limits: TenantLimits) -> StorageResult<()> {
        let bytes = serde_json::to_vec(&limits).unwrap_or_default();
        self.values.set_value(&key(tenant), bytes).await?;
        self.remember(tenant, limits);
        Ok(())
    }

    fn remember(&self, tenant: &str, limits: TenantLimits) {
        let mut copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        if copies.len() >= MAX_CACHED && !copies.contains_key(tenant) {
            copies.clear();
        }
        copies.insert(tenant.to_owned(), (Instant::now(), limits));
    }
}
