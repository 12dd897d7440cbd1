//! A loaded guest and its warm instances. Each tenant gets its own warm instances, so no guest
//! memory is ever shared between tenants; an instance that fails in any way is discarded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::{ComponentExportIndex, ComponentType, Lower, TypedFunc};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::bindings::broker::guest::types;
use super::bindings::{Validator, ValidatorPre};
use super::engine::GuestLimits;
use super::sandbox::{GuestState, LOG_LINE_BYTES};
use super::{GuestError, GuestEvent, Judgement, Verdict};
use crate::event_log::EventLog;
use crate::read_rule::Reader;
use crate::validate::printable;

/// Warm instances kept per tenant (about one per core serves concurrent inserts).
const WARM_PER_TENANT: usize = 2;
/// Warm instances kept in all by one engine, so that many tenants cannot exhaust its slots.
const WARM_TOTAL: usize = 256;

/// Instances alive for one engine (warm or in a call), shared by its loaded guests.
pub type InstanceCount = Arc<AtomicUsize>;

/// `broker:guest/types.viewer`, as `can-read` takes it (the `validator` bindings do not name it).
#[derive(ComponentType, Lower)]
#[component(record)]
struct Viewer {
    username: String,
    tenant: String,
    scopes: Vec<String>,
}

type CanRead = TypedFunc<(Viewer, String), (bool,)>;

struct Warm {
    store: Store<GuestState>,
    validator: Validator,
    /// The guest's `can-read`, if it exports one.
    can_read: Option<CanRead>,
    count: InstanceCount,
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an operator sees of a loaded guest (`GET /admin/guests`).
#[derive(Default)]
pub struct GuestStats {
    pub calls: AtomicU64,
    pub rejections: AtomicU64,
    pub failures: AtomicU64,
}

pub struct LoadedGuest {
    label: Arc<str>,
    /// When it was compiled and installed, in milliseconds since the Unix epoch.
    pub loaded_at: u64,
    pub stats: GuestStats,
    pre: ValidatorPre<GuestState>,
    /// Where `can-read` is among the component's exports, when it has a read rule.
    read_rule: Option<ComponentExportIndex>,
    engine: Engine,
    limits: GuestLimits,
    instances: InstanceCount,
    events: Arc<dyn EventLog>,
    /// tenant → idle instances that have only ever served that tenant.
    warm: Mutex<HashMap<String, Vec<Warm>>>,
}

impl LoadedGuest {
    pub fn new(
        label: &str,
        pre: ValidatorPre<GuestState>,
        read_rule: Option<ComponentExportIndex>,
        engine: Engine,
        limits: GuestLimits,
        instances: InstanceCount,
        events: Arc<dyn EventLog>,
    ) -> Self {
        Self {
            label: label.into(),
            loaded_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            stats: GuestStats::default(),
            pre,
            read_rule,
            engine,
            limits,
            instances,
            events,
            warm: Mutex::default(),
        }
    }

    /// Runs one event through the guest under the time and memory limits; returns its verdict and
    /// what it read of the tenant's state.
    pub async fn validate(&self, event: &GuestEvent<'_>) -> Result<Judgement, GuestError> {
        let wall = self.limits.wall_timeout();
        match tokio::time::timeout(wall, self.validate_unbounded(event)).await {
            Ok(judged) => judged,
            // The call's future, and with it the instance, is dropped: never entered again.
            Err(_) => {
                let failure = GuestError::WallTimeout(u64::try_from(wall.as_millis()).unwrap_or(u64::MAX));
                self.log_failure(event.tenant, &failure);
                Err(failure)
            }
        }
    }

    /// Whether the guest exports a read rule.
    pub fn has_read_rule(&self) -> bool {
        self.read_rule.is_some()
    }

    /// Asks the guest's read rule whether `reader` may read events named `name`, under the same
    /// limits as `validate`; `true` for a guest without one.
    pub async fn can_read(&self, reader: &Reader<'_>, name: &str) -> Result<bool, GuestError> {
        let wall = self.limits.wall_timeout();
        match tokio::time::timeout(wall, self.can_read_unbounded(reader, name)).await {
            Ok(answer) => answer,
            Err(_) => {
                let failure = GuestError::WallTimeout(u64::try_from(wall.as_millis()).unwrap_or(u64::MAX));
                self.log_failure(reader.tenant, &failure);
                Err(failure)
            }
        }
    }

    async fn can_read_unbounded(&self, reader: &Reader<'_>, name: &str) -> Result<bool, GuestError> {
        let mut warm = match self.take_warm(reader.tenant) {
            Some(warm) => warm,
            None => self.instantiate().await?,
        };
        let Some(can_read) = warm.can_read else {
            return Ok(true);
        };
        // The call sees the clock at the question's time, and no data.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        warm.store.data_mut().begin_call(&GuestEvent {
            tenant: reader.tenant,
            username: reader.username,
            scopes: reader.scopes,
            event: name,
            data: "null",
            timestamp: now,
        });
        warm.store.set_epoch_deadline(1);
        let viewer = Viewer {
            username: reader.username.to_owned(),
            tenant: reader.tenant.to_owned(),
            scopes: reader.scopes.to_vec(),
        };
        let called = can_read
            .call_async(&mut warm.store, (viewer, name.to_owned()))
            .await
            .map(|(answer,)| answer);
        match called {
            Ok(answer) => {
                let failed_read = std::mem::take(&mut warm.store.data_mut().reads).failure;
                self.return_warm(reader.tenant, warm);
                match failed_read {
                    // An answer reached on a refused or failed state read is no answer.
                    Some(failure) => {
                        let failure = GuestError::Trap(failure);
                        self.log_failure(reader.tenant, &failure);
                        Err(failure)
                    }
                    None => Ok(answer),
                }
            }
            // The instance may be mid-way through anything: never enter it again.
            Err(error) => Err(self.classify(&error, warm.store.data())),
        }
    }

    async fn validate_unbounded(&self, event: &GuestEvent<'_>) -> Result<Judgement, GuestError> {
        let mut warm = match self.take_warm(event.tenant) {
            Some(warm) => warm,
            None => self.instantiate().await?,
        };
        warm.store.data_mut().begin_call(event);
        warm.store.set_epoch_deadline(1);
        let input = types::Event {
            tenant: event.tenant.to_owned(),
            username: event.username.to_owned(),
            scopes: event.scopes.to_vec(),
            name: event.event.to_owned(),
            data: event.data.to_owned(),
            timestamp: event.timestamp,
        };
        match warm.validator.call_validate(&mut warm.store, &input).await {
            Ok(verdict) => {
                let reads = std::mem::take(&mut warm.store.data_mut().reads);
                self.return_warm(event.tenant, warm);
                // A verdict reached on a refused or failed read is no verdict.
                if let Some(failure) = reads.failure {
                    let failure = GuestError::Trap(failure);
                    self.log_failure(event.tenant, &failure);
                    return Err(failure);
                }
                let verdict = match verdict {
                    types::Verdict::Accept => Verdict::Accept,
                    types::Verdict::Replace(json) => match serde_json::from_str(&json) {
                        Ok(document) => Verdict::Replace(document),
                        Err(error) => return Err(GuestError::InvalidJson(error.to_string())),
                    },
                    types::Verdict::Reject(message) => Verdict::Reject(message),
                };
                Ok(Judgement {
                    verdict,
                    reads: reads.reads,
                })
            }
            // The instance may be mid-way through anything: never enter it again.
            Err(error) => Err(self.classify(&error, warm.store.data())),
        }
    }

    async fn instantiate(&self) -> Result<Warm, GuestError> {
        let state = GuestState::new(
            self.label.clone(),
            self.limits.memory_bytes,
            self.limits.tick_budget(),
            self.events.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        // Each epoch tick that finds the guest running spends one tick of its budget and lets other
        // tasks run; with the budget spent, the guest is interrupted.
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            Ok(match state.ticks_left.checked_sub(1) {
                Some(left) => {
                    state.ticks_left = left;
                    UpdateDeadline::Yield(1)
                }
                None => UpdateDeadline::Interrupt,
            })
        });
        store.set_epoch_deadline(1);
        let instantiated = async {
            let instance = self.pre.instance_pre().instantiate_async(&mut store).await?;
            let validator = Validator::new(&mut store, &instance)?;
            let can_read = match &self.read_rule {
                Some(index) => Some(instance.get_typed_func::<(Viewer, String), (bool,)>(&mut store, index)?),
                None => None,
            };
            wasmtime::Result::Ok((validator, can_read))
        };
        let instantiated: wasmtime::Result<(Validator, Option<CanRead>)> = instantiated.await;
        let (validator, can_read) = instantiated.map_err(|error: wasmtime::Error| {
            let guest = printable(&self.label, LOG_LINE_BYTES);
            let cause = printable(&format!("{error:#}"), LOG_LINE_BYTES);
            tracing::warn!(guest, error = cause, "guest instantiation failed");
            GuestError::Unavailable(format!("{error}"))
        })?;
        self.instances.fetch_add(1, Ordering::Relaxed);
        Ok(Warm {
            store,
            validator,
            can_read,
            count: self.instances.clone(),
        })
    }

    /// The file it was loaded from (or the built-in's name).
    pub fn label(&self) -> &str {
        &self.label
    }

    fn take_warm(&self, tenant: &str) -> Option<Warm> {
        self.warm.lock().expect("warm pool lock").get_mut(tenant)?.pop()
    }

    fn return_warm(&self, tenant: &str, warm: Warm) {
        if self.instances.load(Ordering::Relaxed) > WARM_TOTAL {
            return;
        }
        let mut pools = self.warm.lock().expect("warm pool lock");
        let pool = pools.entry(tenant.to_owned()).or_default();
        if pool.len() < WARM_PER_TENANT {
            pool.push(warm);
        }
    }

    fn classify(&self, error: &wasmtime::Error, state: &GuestState) -> GuestError {
        let failure = if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            GuestError::Timeout(u64::try_from(self.limits.timeout.as_millis()).unwrap_or(u64::MAX))
        } else if state.memory_refused {
            GuestError::OutOfMemory((self.limits.memory_bytes / (1024 * 1024)) as u64)
        } else {
            match error.downcast_ref::<Trap>() {
                Some(trap) => GuestError::Trap(trap.to_string()),
                None => GuestError::Trap(error.to_string()),
            }
        };
        self.log_failure(&state.tenant, &failure);
        failure
    }

    /// One log line per failed call; the label and the failure are shown escaped, since both may
    /// carry a guest's text (a file name, a panic message) with newlines or escape sequences.
    fn log_failure(&self, tenant: &str, failure: &GuestError) {
        let guest = printable(&self.label, LOG_LINE_BYTES);
        let failure = printable(&failure.to_string(), LOG_LINE_BYTES);
        tracing::warn!(guest, tenant, failure, "guest call failed");
    }
}
