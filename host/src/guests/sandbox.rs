//! Per-store state of a guest instance: a WASI context with nothing of the host in it (no files,
//! network, environment or arguments; clocks and randomness from the event, `world`), the memory
//! and handle caps, the `log` import, and this call's `state` reads.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::GuestEvent;
use super::bindings::broker::guest::log::{Host as LogHost, Level};
use super::state::CallReads;
use super::world::CallWorld;
use crate::event_log::EventLog;

/// Log lines one guest call may write before the rest are dropped.
const LOG_LINES_PER_CALL: u32 = 20;
/// Longest guest log line kept, in bytes (also any other guest-supplied text in a log line).
pub const LOG_LINE_BYTES: usize = 500;
/// Most table elements a guest may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most host resources (WASI streams, pollables) an instance may hold at once: a guest that leaks
/// handles gets an error, not host memory (wasmtime's own default is a million).
pub const MAX_RESOURCES: usize = 1_000;

pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The clocks and randomness the guest sees, set for each call.
    world: CallWorld,
    /// Linear-memory limit in bytes, and whether a grow past it was refused.
    memory_cap: usize,
    pub memory_refused: bool,
    /// The guest file and the tenant of the current call, for log lines.
    label: Arc<str>,
    pub tenant: String,
    logs_this_call: u32,
    /// Epoch ticks the current call (or the instantiation) may still run for.
    pub ticks_left: u32,
    tick_budget: u32,
    /// What `state.latest` reads (the current call's tenant only).
    pub events: Arc<dyn EventLog>,
    /// The current call's `state.latest` answers.
    pub reads: CallReads,
}

impl GuestState {
    pub fn new(label: Arc<str>, memory_cap: usize, tick_budget: u32, events: Arc<dyn EventLog>) -> Self {
        let world = CallWorld::default();
        let mut wasi = WasiCtx::builder();
        world.install(&mut wasi);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            wasi: wasi.build(),
            table,
            world,
            memory_cap,
            memory_refused: false,
            label,
            tenant: String::new(),
            logs_this_call: 0,
            ticks_left: tick_budget,
            tick_budget,
            events,
            reads: CallReads::default(),
        }
    }

    pub fn begin_call(&mut self, event: &GuestEvent<'_>) {
        event.tenant.clone_into(&mut self.tenant);
        self.world
            .begin_call(event.tenant, event.username, event.event, event.timestamp);
        self.logs_this_call = 0;
        self.ticks_left = self.tick_budget;
        self.reads = CallReads::default();
        // A guest may survive a refused grow; only this call's refusals explain this call's failure.
        self.memory_refused = false;
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl LogHost for GuestState {
    fn log(&mut self, level: Level, message: String) {
        self.logs_this_call += 1;
        if self.logs_this_call > LOG_LINES_PER_CALL {
            if self.logs_this_call == LOG_LINES_PER_CALL + 1 {
                let guest = crate::validate::printable(&self.label, LOG_LINE_BYTES);
                tracing::warn!(
                    guest,
                    tenant = self.tenant,
                    "further guest log lines dropped for this call"
                );
            }
            return;
        }
        let message = crate::validate::printable(&message, LOG_LINE_BYTES);
        let guest = crate::validate::printable(&self.label, LOG_LINE_BYTES);
        let (guest, tenant) = (guest.as_str(), self.tenant.as_str());
        match level {
            Level::Debug => tracing::debug!(guest, tenant, "guest: {message}"),
            Level::Info => tracing::info!(guest, tenant, "guest: {message}"),
            Level::Warn => tracing::warn!(guest, tenant, "guest: {message}"),
            Level::Error => tracing::error!(guest, tenant, "guest: {message}"),
        }
    }
}
