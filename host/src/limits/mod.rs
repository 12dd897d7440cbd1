//! Limits per user, per tenant and per client address, so that no one can take the node from the
//! others: inserts per user and per tenant, password checks per address (argon2 is the most
//! expensive thing an anonymous client can ask for), open streams per user and per tenant, stored
//! bytes per tenant (counted by the event log as events are inserted and erased). Each is
//! a flag whose default a normal app never meets, per node; an admin may give a tenant other values
//! (`overrides`). Past a limit the caller is told which one and when to come back (`Limited`:
//! 429 with `Retry-After`), before anything is written.

pub mod buckets;
pub mod open_streams;
pub mod overrides;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::buckets::{Buckets, Rate};
use self::open_streams::{Full, OpenStreams, StreamPermit};
use self::overrides::{Overrides, TenantLimits};
use crate::event_log::EventLog;
use crate::metrics::metrics;
use crate::model::User;
use crate::storage::StorageResult;
use crate::user_directory::UserDirectory;

/// How often buckets that refilled are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The limits in force for one tenant: the flags, with the tenant's override on top.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub user_inserts: Rate,
    pub tenant_inserts: Rate,
    /// Open streams per user and per tenant on this node (0: no limit).
    pub user_streams: u32,
    pub tenant_streams: u32,
    /// Bytes the tenant's stored events may take (0: no limit; LMDB only).
    pub tenant_max_bytes: u64,
}

impl Settings {
    /// Every value, in the shape of an override (for the admin API).
    pub fn as_fields(&self) -> TenantLimits {
        TenantLimits {
            user_insert_rate: Some(self.user_inserts.per_second),
            user_insert_burst: Some(self.user_inserts.burst),
            tenant_insert_rate: Some(self.tenant_inserts.per_second),
            tenant_insert_burst: Some(self.tenant_inserts.burst),
            user_streams: Some(self.user_streams),
            tenant_streams: Some(self.tenant_streams),
            tenant_max_bytes: Some(self.tenant_max_bytes),
        }
    }

    fn with(mut self, tenant: &TenantLimits) -> Self {
        fn set<T: Copy>(value: &mut T, given: Option<T>) {
            *value = given.unwrap_or(*value);
        }
        set(&mut self.user_inserts.per_second, tenant.user_insert_rate);
        set(&mut self.user_inserts.burst, tenant.user_insert_burst);
        set(&mut self.tenant_inserts.per_second, tenant.tenant_insert_rate);
        set(&mut self.tenant_inserts.burst, tenant.tenant_insert_burst);
        set(&mut self.user_streams, tenant.user_streams);
        set(&mut self.tenant_streams, tenant.tenant_streams);
        set(&mut self.tenant_max_bytes, tenant.tenant_max_bytes);
        self
    }
}

/// One limit, named as its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    UserInsertRate,
    TenantInsertRate,
    LoginRate,
    UserStreams,
    TenantStreams,
    TenantMaxBytes,
}

impl Limit {
    pub const fn name(self) -> &'static str {
        match self {
            Self::UserInsertRate => "user_insert_rate",
            Self::TenantInsertRate => "tenant_insert_rate",
            Self::LoginRate => "login_rate",
            Self::UserStreams => "user_streams",
            Self::TenantStreams => "tenant_streams",
            Self::TenantMaxBytes => "tenant_max_bytes",
        }
    }

    const fn what(self) -> &'static str {
        match self {
            Self::UserInsertRate => "inserts per second for this user",
            Self::TenantInsertRate => "inserts per second for this tenant",
            Self::LoginRate => "password checks per second from this address",
            Self::UserStreams => "open streams for this user",
            Self::TenantStreams => "open streams for this tenant",
            Self::TenantMaxBytes => "stored bytes for this tenant",
        }
    }
}

/// A request refused by a limit, with when to come back.
#[derive(Debug, thiserror::Error)]
#[error("too many {}: over the {} limit{}", limit.what(), limit.name(), come_back(*retry_after))]
pub struct Limited {
    pub limit: Limit,
    /// Zero for a limit no wait lifts (stored bytes: something must be erased first).
    pub retry_after: Duration,
}

fn come_back(wait: Duration) -> String {
    match wait.is_zero() {
        true => "; erase events or ask for more".into(),
        false => format!("; retry in {} s", retry_after_secs(wait)),
    }
}

/// Whole seconds for `Retry-After`, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl Limited {
    /// A refusal by `limit`, counted in `broker_limited_total`.
    pub fn new(limit: Limit, retry_after: Duration) -> Self {
        metrics().limited(limit.name());
        Self { limit, retry_after }
    }
}

/// Every limit, for the HTTP layer and the auth step.
pub struct Limits {
    defaults: Settings,
    /// Where the tenants' stored bytes are counted.
    events: Arc<dyn EventLog>,
    login: Rate,
    overrides: Overrides,
    user_inserts: Buckets,
    tenant_inserts: Buckets,
    logins: Buckets,
    streams: Arc<OpenStreams>,
}

/// An address's bucket: an IPv6 client usually holds a whole /64, so that is one key.
fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl Limits {
    /// The limits, with a task that drops refilled buckets until `shutdown`.
    pub fn start(
        defaults: Settings,
        login: Rate,
        values: Arc<dyn UserDirectory>,
        events: Arc<dyn EventLog>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let limits = Arc::new(Self {
            defaults,
            events,
            login,
            overrides: Overrides::new(values),
            user_inserts: Buckets::new(),
            tenant_inserts: Buckets::new(),
            logins: Buckets::new(),
            streams: Arc::default(),
        });
        // Each limit's series exists from the start: an alert's rate() over an absent one is none.
        Self::refusals();
        let sweeping = Arc::downgrade(&limits);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(SWEEP_EVERY) => {}
                }
                let Some(limits) = sweeping.upgrade() else { return };
                for buckets in [&limits.user_inserts, &limits.tenant_inserts, &limits.logins] {
                    buckets.sweep();
                }
            }
        });
        limits
    }

    /// The flags' values.
    pub fn defaults(&self) -> Settings {
        self.defaults
    }

    /// The limits in force for `tenant`.
    pub async fn of_tenant(&self, tenant: &str) -> Settings {
        self.defaults.with(&self.overrides.of(tenant).await)
    }

    /// `tenant`'s override as set (empty when none).
    pub async fn override_of(&self, tenant: &str) -> TenantLimits {
        self.overrides.of(tenant).await
    }

    /// Replaces `tenant`'s override.
    pub async fn set_override(&self, tenant: &str, limits: TenantLimits) -> StorageResult<()> {
        self.overrides.set(tenant, limits).await
    }

    /// One insert by `user`: a token from the user's bucket and one from the tenant's.
    pub async fn insert(&self, user: &User) -> Result<(), Limited> {
        let settings = self.of_tenant(&user.tenant_name).await;
        self.user_inserts
            .take(&user.username, settings.user_inserts)
            .map_err(|wait| Limited::new(Limit::UserInsertRate, wait))?;
        self.tenant_inserts
            .take(&user.tenant_name, settings.tenant_inserts)
            .map_err(|wait| Limited::new(Limit::TenantInsertRate, wait))
    }

    /// Whether `tenant`'s stored events are under its `tenant_max_bytes`, where the log counts
    /// them; answers the limit (0: none), which the insert carries to its commit to be checked
    /// again there (this early check only spares a refused insert its body and guest).
    pub async fn storage(&self, tenant: &str) -> Result<u64, Limited> {
        let max = self.of_tenant(tenant).await.tenant_max_bytes;
        if max == 0 {
            return Ok(0);
        }
        match self.events.stored_bytes(tenant).await {
            Ok(Some(bytes)) if bytes >= max => Err(Limited::new(Limit::TenantMaxBytes, Duration::ZERO)),
            Ok(_) => Ok(max),
            // The insert itself will meet the store's trouble and answer it.
            Err(_) => Ok(max),
        }
    }

    /// One password check (argon2) asked for from `address`.
    pub fn password_check(&self, address: IpAddr) -> Result<(), Limited> {
        self.logins
            .take(&address_key(address), self.login)
            .map_err(|wait| Limited::new(Limit::LoginRate, wait))
    }

    /// A password check that costs no argon2 run (a credential accepted moments ago): free, but
    /// refused while the address is refused, or a guesser past the limit would learn which of
    /// its guesses is right from which ones are not refused.
    pub fn remembered_password_check(&self, address: IpAddr) -> Result<(), Limited> {
        match self.logins.refusing(&address_key(address)) {
            Some(wait) => Err(Limited::new(Limit::LoginRate, wait)),
            None => Ok(()),
        }
    }

    /// One more open stream for `user`, held until the permit is dropped. A full count frees only
    /// when a stream ends, which no clock says: come back in a few seconds.
    pub async fn open_stream(&self, user: &User) -> Result<StreamPermit, Limited> {
        let settings = self.of_tenant(&user.tenant_name).await;
        let opened = self.streams.open(
            &user.username,
            &user.tenant_name,
            settings.user_streams,
            settings.tenant_streams,
        );
        let retry = Duration::from_secs(5);
        opened.map_err(|full| match full {
            Full::User => Limited::new(Limit::UserStreams, retry),
            Full::Tenant => Limited::new(Limit::TenantStreams, retry),
        })
    }

    /// Requests refused by each limit on this node since start.
    pub fn refusals() -> Vec<(&'static str, u64)> {
        let all = [
            Limit::UserInsertRate,
            Limit::TenantInsertRate,
            Limit::LoginRate,
            Limit::UserStreams,
            Limit::TenantStreams,
            Limit::TenantMaxBytes,
        ];
        all.iter()
            .map(|limit| (limit.name(), metrics().limited_count(limit.name())))
            .collect()
    }

    /// Open streams of `tenant` on this node.
    pub fn open_streams_of(&self, tenant: &str) -> u32 {
        self.streams.of_tenant(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_replaces_only_the_values_it_names() {
        let defaults = Settings {
            user_inserts: Rate::new(10.0, 20),
            tenant_inserts: Rate::new(100.0, 200),
            user_streams: 5,
            tenant_streams: 50,
            tenant_max_bytes: 0,
        };
        let tenant = TenantLimits {
            tenant_insert_rate: Some(1_000.0),
            user_streams: Some(0),
            ..TenantLimits::default()
        };
        let settings = defaults.with(&tenant);
        assert_eq!(settings.tenant_inserts, Rate::new(1_000.0, 200));
        assert_eq!(settings.user_inserts, defaults.user_inserts);
        assert_eq!((settings.user_streams, settings.tenant_streams), (0, 50));
    }

    #[test]
    fn an_ipv6_client_is_one_key_per_64_and_a_mapped_ipv4_its_own_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.1");
    }
}
