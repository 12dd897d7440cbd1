//! The one wasmtime engine: component model, pooling allocator, epoch interruption driven by a
//! ticker thread, and a linker offering guests WASI (with an empty context), `log` and `state`. Compiling is
//! the expensive part and happens when a guest is loaded, never per insert.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::error::Context;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::ValidatorPre;
use super::bindings::broker::guest::{log, state};
use super::instance::{InstanceCount, LoadedGuest};
use super::sandbox::GuestState;
use crate::event_log::EventLog;

/// Epoch ticks drive guest time limits: each tick that finds a guest running costs it one tick of
/// its budget and yields to other tasks; a guest whose budget is spent is interrupted. Time spent
/// yielded or waiting for a thread is not charged, so host load cannot time out a quick guest.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Guest instances that may exist at once (pooling-allocator slots).
const INSTANCE_SLOTS: u32 = 1000;

/// Limits every guest call runs under.
#[derive(Debug, Clone, Copy)]
pub struct GuestLimits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

/// A call's wall-clock bound is this many times its running-time limit (at least
/// `MIN_WALL_TIMEOUT`): epoch ticks only charge a guest while it runs, so a guest waiting on the
/// host (a WASI sleep, a pollable) would otherwise hold its instance and its insert forever.
const WALL_TIMEOUT_FACTOR: u32 = 20;
const MIN_WALL_TIMEOUT: Duration = Duration::from_secs(1);

impl GuestLimits {
    /// How long a call may take in all, waiting included.
    pub fn wall_timeout(&self) -> Duration {
        (self.timeout * WALL_TIMEOUT_FACTOR).max(MIN_WALL_TIMEOUT)
    }

    /// The number of epoch ticks a call may run for.
    pub fn tick_budget(&self) -> u32 {
        let ticks = self.timeout.as_micros().div_ceil(EPOCH_TICK.as_micros()).max(1);
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }
}

pub struct GuestEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    limits: GuestLimits,
    /// Where compiled guests are kept between restarts (None: no cache).
    cache_dir: Option<PathBuf>,
    /// Live instances across this engine's guests, to cap the warm ones.
    instances: InstanceCount,
    /// What guests' `state.latest` reads.
    events: Arc<dyn EventLog>,
}

impl GuestEngine {
    pub fn new(
        limits: GuestLimits,
        cache_dir: Option<PathBuf>,
        events: Arc<dyn EventLog>,
    ) -> wasmtime::Result<Self> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(INSTANCE_SLOTS)
            .total_core_instances(INSTANCE_SLOTS * 4)
            .total_memories(INSTANCE_SLOTS)
            .total_tables(INSTANCE_SLOTS * 4)
            .max_memory_size(limits.memory_bytes)
            // Keep a little of each slot's memory resident so reuse does not fault it back in.
            .linear_memory_keep_resident(64 * 1024)
            .table_keep_resident(16 * 1024);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Guests export plain functions: without component-model-async machinery, an async
            // call is one fiber switch rather than a queued concurrent task (measured below).
            .concurrency_support(false)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).context("configuring the wasm engine")?;
        start_epoch_ticker(&engine);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).context("linking WASI")?;
        log::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)
            .context("linking the log import")?;
        state::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)
            .context("linking the state import")?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self {
            engine,
            linker,
            limits,
            cache_dir,
            instances: InstanceCount::default(),
            events,
        })
    }

    /// Compiles (or loads from the cache) a guest component and checks it implements the world.
    pub fn load(&self, label: &str, wasm: &[u8]) -> wasmtime::Result<Arc<LoadedGuest>> {
        let component = self.compile(wasm).map_err(|error| {
            // A guest whose initial memory is over the cap (a JavaScript engine's snapshot, say)
            // can only ever be refused: say which flag lets it in.
            if format!("{error:#}").contains("exceeds the limit") {
                let cap = self.limits.memory_bytes >> 20;
                error.context(format!(
                    "the guest needs more memory than --guest_memory_mb={cap} allows: raise it"
                ))
            } else {
                error
            }
        })?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .context("linking the guest's imports")?;
        let pre =
            ValidatorPre::new(instance_pre).context("the guest does not implement broker:guest/validator")?;
        // A guest of the `reader` world also exports its read rule.
        let read_rule = component.get_export_index(None, "can-read");
        Ok(Arc::new(LoadedGuest::new(
            label,
            pre,
            read_rule,
            self.engine.clone(),
            self.limits,
            self.instances.clone(),
            self.events.clone(),
        )))
    }

    fn compile(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, wasm).context("compiling the guest");
        };
        let cached = dir.join(format!("{}.cwasm", self.cache_key(wasm)));
        if cached.exists() {
            // SAFETY: files in the cache directory are written only by `store_in_cache` below, from
            // `Component::serialize` of this engine configuration (the key includes its hash).
            #[expect(
                unsafe_code,
                reason = "deserializing precompiled code that Broker wrote itself"
            )]
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(%error, file = %cached.display(), "ignoring an unusable cached guest")
                }
            }
        }
        let component = Component::new(&self.engine, wasm).context("compiling the guest")?;
        if let Err(error) = store_in_cache(&component, &cached) {
            tracing::warn!(%error, file = %cached.display(), "could not cache a compiled guest");
        }
        Ok(component)
    }

    /// The guest's bytes and the engine's compatibility hash: a new wasmtime or new settings miss.
    fn cache_key(&self, wasm: &[u8]) -> String {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let mut digest = Sha256::new();
        digest.update(engine_hash.finish().to_le_bytes());
        digest.update(wasm);
        digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn store_in_cache(component: &Component, path: &Path) -> wasmtime::Result<()> {
    let bytes = component.serialize()?;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// Advances the engine's epoch every tick; stops once the engine is gone.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("guest-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker");
}
