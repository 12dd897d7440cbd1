//! The guest step of the insert path: each event's data passes through its tenant's guest, a
//! WebAssembly component that accepts it, replaces it with another JSON document, or rejects it.
//!
//! - `bindings`: host side of `wit/broker.wit`;
//! - `engine`: the wasmtime engine, linker, limits and compiled-guest cache;
//! - `instance`: a loaded guest and its warm per-tenant instances;
//! - `sandbox`: what a guest instance can reach (empty WASI, a memory cap, `log`, `state`);
//! - `world`: the clocks and randomness a guest sees (the event's time, a seed from the event);
//! - `state`: the `state.latest` import, and the reads an insert must still find true at commit;
//! - `directory`: the guests directory, watched for new, changed and removed files.
//!
//! Selection: `<tenant_name>.wasm` for that tenant, else `default.wasm`, else the built-in
//! pass-through guest compiled into the binary.

mod bindings;
mod directory;
mod engine;
mod instance;
mod sandbox;
mod state;
mod world;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event_log::EventLog;
use crate::metrics::metrics;
use crate::model::LatestRead;
use crate::read_rule::{ReadRule, Reader};
pub use engine::{GuestEngine, GuestLimits};
pub use instance::LoadedGuest;
pub use state::{MAX_READ_BYTES_PER_CALL, MAX_READS_PER_CALL};

/// The WIT contract guests implement, as `broker wit` prints it.
pub const WIT: &str = include_str!("../../../wit/broker.wit");

/// The default guest, built from `guests/passthrough` by `build.rs`.
pub const PASSTHROUGH_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guests/passthrough.wasm"));
const BUILTIN_LABEL: &str = "built-in passthrough";

/// What a guest is shown of an insert.
#[derive(Debug, Clone)]
pub struct GuestEvent<'a> {
    pub tenant: &'a str,
    pub username: &'a str,
    pub scopes: &'a [String],
    pub event: &'a str,
    /// The event's data as JSON text.
    pub data: &'a str,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// A guest's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Store and publish this document instead (parsed from the guest's text: text that is not
    /// JSON is a `GuestError::InvalidJson`).
    Replace(serde_json::Value),
    Reject(String),
}

/// A verdict, and the reads of the tenant's state it was reached on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reads: Vec<LatestRead>,
}

/// A guest that failed rather than answered. The insert is refused; the host carries on.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest exceeded its time limit of {0} ms")]
    Timeout(u64),
    /// It waited on the host (a WASI sleep or poll) past its wall-clock bound.
    #[error("guest did not answer within {0} ms")]
    WallTimeout(u64),
    #[error("guest exceeded its memory limit of {0} MiB")]
    OutOfMemory(u64),
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest returned invalid JSON: {0}")]
    InvalidJson(String),
    #[error("guest could not be started: {0}")]
    Unavailable(String),
}

impl GuestError {
    /// The failure's kind, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) | Self::WallTimeout(_) => "timeout",
            Self::OutOfMemory(_) => "out_of_memory",
            Self::Trap(_) => "trap",
            Self::InvalidJson(_) => "invalid_json",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Which guest serves which tenant.
#[derive(Default)]
struct Installed {
    /// From `default.wasm`: serves tenants without their own guest.
    default: Option<Arc<LoadedGuest>>,
    /// From `<tenant_name>.wasm`.
    tenants: HashMap<String, Arc<LoadedGuest>>,
}

/// The guests of every tenant.
pub struct Guests {
    engine: GuestEngine,
    builtin: Arc<LoadedGuest>,
    /// Swapped as files change; a call holds its own `Arc`, so a swap never disturbs it.
    installed: RwLock<Installed>,
    /// Files in the guests directory that were refused, with the reason (until they load or go).
    refused: Mutex<HashMap<String, String>>,
    /// Moves on with every guest installed or removed: read-rule answers older than it are stale.
    generation: std::sync::atomic::AtomicU64,
}

/// One line of the guests listing.
#[derive(Debug, serde::Serialize)]
pub struct GuestInfo {
    pub file: String,
    /// The tenant it serves, or `None` for the default guest / the built-in one.
    pub tenant: Option<String>,
    pub loaded_at: u64,
    pub calls: u64,
    pub rejections: u64,
    pub failures: u64,
}

/// Which guests run and which files were refused, for operators.
#[derive(Debug, serde::Serialize)]
pub struct GuestsListing {
    /// The guest for tenants without one of their own: `default.wasm`, else the built-in.
    pub default: GuestInfo,
    pub tenants: Vec<GuestInfo>,
    pub refused: Vec<RefusedFile>,
}

#[derive(Debug, serde::Serialize)]
pub struct RefusedFile {
    pub file: String,
    pub reason: String,
}

impl Guests {
    /// Builds the engine, compiles the built-in guest, loads the guests directory and starts
    /// watching it until `shutdown`. Guests' `state.latest` reads `events`.
    pub async fn start(
        config: &Config,
        events: Arc<dyn EventLog>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let limits = GuestLimits {
            timeout: Duration::from_millis(config.guest_timeout_ms.max(1)),
            memory_bytes: usize::try_from(config.guest_memory_mb.max(1) * 1024 * 1024).unwrap_or(usize::MAX),
        };
        let cache = config.guest_cache_dir();
        let guests = tokio::task::spawn_blocking(move || -> anyhow::Result<Self> {
            let engine = GuestEngine::new(limits, Some(cache), events).map_err(anyhow::Error::from)?;
            let builtin = engine
                .load(BUILTIN_LABEL, PASSTHROUGH_WASM)
                .map_err(anyhow::Error::from);
            let builtin = builtin.context("loading the built-in guest")?;
            Ok(Self {
                engine,
                builtin,
                installed: RwLock::default(),
                refused: Mutex::default(),
                generation: std::sync::atomic::AtomicU64::new(0),
            })
        })
        .await??;
        let guests = Arc::new(guests);
        directory::watch(guests.clone(), config.guests.clone(), shutdown).await;
        Ok(guests)
    }

    /// Runs `event` through its tenant's guest, on the calling task (see `instance`).
    pub async fn check(&self, event: &GuestEvent<'_>) -> Result<Judgement, GuestError> {
        let guest = self.guest_for(event.tenant);
        let started = std::time::Instant::now();
        let judgement = guest.validate(event).await;
        metrics()
            .guest_call_seconds
            .observe(started.elapsed().as_secs_f64());
        let stats = &guest.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        match &judgement {
            Ok(Judgement {
                verdict: Verdict::Reject(_),
                ..
            }) => stats.rejections.fetch_add(1, Ordering::Relaxed),
            Ok(_) => 0,
            Err(failure) => {
                metrics().guest_failure(failure.kind());
                stats.failures.fetch_add(1, Ordering::Relaxed)
            }
        };
        judgement
    }

    /// The guests in use, with their counts, and the files refused.
    pub fn listing(&self) -> GuestsListing {
        let info = |guest: &LoadedGuest, tenant: Option<String>| GuestInfo {
            file: guest.label().to_owned(),
            tenant,
            loaded_at: guest.loaded_at,
            calls: guest.stats.calls.load(Ordering::Relaxed),
            rejections: guest.stats.rejections.load(Ordering::Relaxed),
            failures: guest.stats.failures.load(Ordering::Relaxed),
        };
        let installed = self.installed.read().expect("guest registry lock");
        let mut tenants: Vec<GuestInfo> = installed
            .tenants
            .iter()
            .map(|(tenant, guest)| info(guest, Some(tenant.clone())))
            .collect();
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let refused = self.refused.lock().expect("refused files lock");
        let mut refused: Vec<RefusedFile> = refused
            .iter()
            .map(|(file, reason)| RefusedFile {
                file: file.clone(),
                reason: reason.clone(),
            })
            .collect();
        refused.sort_by(|a, b| a.file.cmp(&b.file));
        GuestsListing {
            default: info(installed.default.as_deref().unwrap_or(&self.builtin), None),
            tenants,
            refused,
        }
    }

    /// Remembers why `file` was refused (`None`: it loaded, or went away).
    fn note_refusal(&self, file: &str, reason: Option<String>) {
        let mut refused = self.refused.lock().expect("refused files lock");
        match reason {
            Some(reason) => refused.insert(file.to_owned(), reason),
            None => refused.remove(file),
        };
    }

    fn guest_for(&self, tenant: &str) -> Arc<LoadedGuest> {
        let installed = self.installed.read().expect("guest registry lock");
        installed
            .tenants
            .get(tenant)
            .or(installed.default.as_ref())
            .unwrap_or(&self.builtin)
            .clone()
    }

    /// Installs (or with `None` removes) the guest for `slot`.
    fn set(&self, slot: &directory::Slot, guest: Option<Arc<LoadedGuest>>) {
        let mut installed = self.installed.write().expect("guest registry lock");
        self.generation.fetch_add(1, Ordering::Release);
        match (slot, guest) {
            (directory::Slot::Default, guest) => installed.default = guest,
            (directory::Slot::Tenant(name), Some(guest)) => {
                installed.tenants.insert(name.clone(), guest);
            }
            (directory::Slot::Tenant(name), None) => {
                installed.tenants.remove(name);
            }
        }
    }
}

/// The tenant's guest is its read rule, when it exports `can-read`.
#[async_trait::async_trait]
impl ReadRule for Guests {
    fn applies(&self, tenant: &str) -> bool {
        self.guest_for(tenant).has_read_rule()
    }

    async fn allows(&self, reader: &Reader<'_>, name: &str) -> bool {
        let guest = self.guest_for(reader.tenant);
        if !guest.has_read_rule() {
            return true;
        }
        let started = std::time::Instant::now();
        let answer = guest.can_read(reader, name).await;
        metrics()
            .guest_call_seconds
            .observe(started.elapsed().as_secs_f64());
        guest.stats.calls.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(answer) => answer,
            // Fail closed: a rule that cannot answer denies.
            Err(failure) => {
                metrics().guest_failure(failure.kind());
                guest.stats.failures.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
