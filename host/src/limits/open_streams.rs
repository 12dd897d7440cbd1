//! Open streams counted per user and per tenant. A stream holds a `StreamPermit` for its life; the
//! counts fall when it is dropped, whichever way the stream ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Counts {
    users: HashMap<String, u32>,
    tenants: HashMap<String, u32>,
}

/// Which count was full.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    User,
    Tenant,
}

#[derive(Default)]
pub struct OpenStreams {
    counts: Mutex<Counts>,
}

/// One open stream, counted until dropped.
pub struct StreamPermit {
    streams: Arc<OpenStreams>,
    username: String,
    tenant: String,
}

impl OpenStreams {
    /// Counts one more stream for `username` in `tenant` unless either already has its most
    /// (0: no limit); both counts move together or neither does.
    pub fn open(
        self: &Arc<Self>,
        username: &str,
        tenant: &str,
        user_max: u32,
        tenant_max: u32,
    ) -> Result<StreamPermit, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let full = |count: Option<&u32>, max: u32| max > 0 && count.copied().unwrap_or(0) >= max;
        if full(counts.users.get(username), user_max) {
            return Err(Full::User);
        }
        if full(counts.tenants.get(tenant), tenant_max) {
            return Err(Full::Tenant);
        }
        *counts.users.entry(username.to_owned()).or_default() += 1;
        *counts.tenants.entry(tenant.to_owned()).or_default() += 1;
        Ok(StreamPermit {
            streams: self.clone(),
            username: username.to_owned(),
            tenant: tenant.to_owned(),
        })
    }

    /// Open streams of `tenant`.
    pub fn of_tenant(&self, tenant: &str) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.tenants.get(tenant).copied().unwrap_or(0)
    }
}

/// Lowers `key`'s count, forgetting it at zero so that the maps hold open streams only.
fn release(map: &mut HashMap<String, u32>, key: &str) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut counts = self.streams.counts.lock().unwrap_or_else(|e| e.into_inner());
        release(&mut counts.users, &self.username);
        release(&mut counts.tenants, &self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hold_per_user_and_tenant_and_fall_when_streams_end() {
        let streams = Arc::new(OpenStreams::default());
        let a1 = streams.open("a", "t", 2, 3).unwrap();
        let _a2 = streams.open("a", "t", 2, 3).unwrap();
        assert_eq!(streams.open("a", "t", 2, 3).err(), Some(Full::User));
        let _b = streams.open("b", "t", 2, 3).unwrap();
        assert_eq!(streams.open("c", "t", 2, 3).err(), Some(Full::Tenant));
        // A refusal counted nothing.
        assert_eq!(streams.of_tenant("t"), 3);
        drop(a1);
        let _c = streams.open("c", "t", 2, 3).unwrap();
        assert!(streams.open("d", "u", 0, 0).is_ok());
        drop(_c);
        drop(_b);
        drop(_a2);
        let counts = streams.counts.lock().unwrap();
        assert!(counts.users.is_empty() && counts.tenants.is_empty());
    }
}
